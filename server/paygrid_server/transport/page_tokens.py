"""Opaque page tokens for ListPayments: a cursor the client hands back as is."""

from __future__ import annotations

import base64
import binascii
import json

from paygrid_server.domain.model import limits
from paygrid_server.domain.model.errors import FieldViolation, InvalidRequest
from paygrid_server.domain.ports.payment_store import PageCursor


def encode(cursor: PageCursor | None) -> str:
    if cursor is None:
        return ""
    raw = json.dumps([cursor.received_at_us, cursor.payment_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode(token: str) -> PageCursor | None:
    if not token:
        return None
    invalid = InvalidRequest([FieldViolation(
        "page_token", "not a token returned by ListPayments; start again with an empty one")])
    if len(token) > limits.PAGE_TOKEN_MAX_CHARS:
        raise invalid
    try:
        received_at_us, payment_id = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise invalid from None
    # A token is the client's to send back as is, so anything may come back:
    # a cursor out of int64 would fail in the store, not here.
    if type(received_at_us) is not int or not 0 <= received_at_us < 2**63 \
            or not isinstance(payment_id, str):
        raise invalid
    return PageCursor(received_at_us, payment_id)
