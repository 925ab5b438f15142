"""Minimal Python client example: one Pay with paygrid_client, which sets a
deadline, makes the idempotency key once per logical payment (reused on its
retries) and raises PaygridError with the field violations.

  .venv/bin/python clients/python/pay_example.py --target 127.0.0.1:50051 \\
      --payee merchant_0001 --currency EUR --amount-minor 1250

Exit codes as for the `paygrid` CLI: 0 succeeded, 1 not succeeded,
2 refused (e.g. INVALID_ARGUMENT), 3 unreachable or too slow.
"""

from __future__ import annotations

import argparse
import sys

from google.protobuf import json_format

from paygrid.v1 import payment_service_pb2 as pb
from paygrid_client import Leg, PaygridClient, PaygridError
from paygrid_client.cli_exit_codes import exit_code_for


def main() -> int:
    parser = argparse.ArgumentParser(description="pay one leg through paygrid")
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--payer", default="acct_000012345678")
    parser.add_argument("--payee", default="merchant_0001")
    parser.add_argument("--currency", default="EUR")
    parser.add_argument("--amount-minor", type=int, default=1250)
    parser.add_argument("--idempotency-key", help="default: a new key")
    parser.add_argument("--timeout-s", type=float, default=5.0)
    args = parser.parse_args()

    with PaygridClient(args.target) as client:
        try:
            payment = client.pay(args.payer, [Leg(args.payee, args.currency, args.amount_minor)],
                                 idempotency_key=args.idempotency_key, timeout_s=args.timeout_s)
        except PaygridError as error:
            print(error, file=sys.stderr)  # code, reason, and each field violation
            return exit_code_for(error)
    print(json_format.MessageToJson(payment))
    return 0 if payment.status == pb.PAYMENT_STATUS_SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
