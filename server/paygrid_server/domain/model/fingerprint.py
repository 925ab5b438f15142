"""Request fingerprints: an idempotent replay must carry the very same body."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def fingerprint(body: Any) -> str:
    """SHA-256 of a canonical JSON form of `body` (lists, dicts, scalars)."""
    canonical = json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
