"""Keeps account numbers out of logs: only the last four characters show."""


def mask_account(account: str) -> str:
    if len(account) <= 4:
        return "****"
    return "****" + account[-4:]
