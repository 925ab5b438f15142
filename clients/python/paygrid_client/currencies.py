"""ISO 4217 active currency codes and their minor-unit exponents, for the
client to turn decimal amounts (pain.001) into minor units on its own: the
client installs without the server. The server has the same table
(paygrid_server/domain/model/currencies.py); tests/clients keep them equal.

Fund codes, precious metals and testing codes (XAU, XTS, XXX...) have no
minor unit and are not payable, so they are left out on purpose.
"""

from __future__ import annotations

# Currencies whose exponent is not 2.
_NON_TWO_DIGIT = {
    # 0 digits
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0,
    "KRW": 0, "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0,
    "XAF": 0, "XOF": 0, "XPF": 0,
    # 3 digits
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # 4 digits
    "CLF": 4, "UYW": 4,
}

_TWO_DIGIT = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL
BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP
DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR
ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD
MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN
PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP
STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES
WST XCD XCG YER ZAR ZMW ZWG
""".split()

MINOR_UNITS: dict[str, int] = {code: 2 for code in _TWO_DIGIT} | _NON_TWO_DIGIT


def minor_units(currency: str) -> int | None:
    """The ISO 4217 exponent of `currency`, or None when it is not payable."""
    return MINOR_UNITS.get(currency)
