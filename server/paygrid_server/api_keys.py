"""API keys and the tenants they belong to.

Keys are stored as SHA-256 digests, never in clear: a leaked config file or
environment does not leak a usable key. A plain digest (no salt, no slow
hash) is enough because keys are long random tokens, not passwords.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

# Documented in docs/operations/auth.md: the one-command start works with it out of the
# box. It is accepted only while no key at all is configured.
DEV_API_KEY = "paygrid-dev-key"
DEV_TENANT = "dev"

TENANT_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
SHA256_HEX_PATTERN = re.compile(r"[0-9a-f]{64}")
API_KEY_MAX_CHARS = 256
NEW_KEY_RANDOM_BYTES = 32


def api_key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(tenant_id: str) -> str:
    """A fresh key; the prefix only helps a human (and secret scanners) tell what it is."""
    return f"pgk_{tenant_id}_{secrets.token_urlsafe(NEW_KEY_RANDOM_BYTES)}"


@dataclass(frozen=True, slots=True)
class ApiKeyEntry:
    tenant_id: str
    key_sha256: str  # hex digest of the key


class ApiKeyRegistry:
    def __init__(self, entries: tuple[ApiKeyEntry, ...]) -> None:
        for entry in entries:
            assert TENANT_ID_PATTERN.fullmatch(entry.tenant_id), entry.tenant_id
            assert SHA256_HEX_PATTERN.fullmatch(entry.key_sha256), entry.tenant_id
        dev_key_sha256 = api_key_sha256(DEV_API_KEY)
        if not entries:
            entries = (ApiKeyEntry(DEV_TENANT, dev_key_sha256),)
        self.dev_key_only = all(e.key_sha256 == dev_key_sha256 for e in entries)
        self._tenant_by_digest = {e.key_sha256: e.tenant_id for e in entries}

    @property
    def tenants(self) -> list[str]:
        return sorted(set(self._tenant_by_digest.values()))

    def tenant_for(self, key: str) -> str | None:
        """The tenant owning the key, or None for an unknown key."""
        if not key or len(key) > API_KEY_MAX_CHARS:
            return None
        # The lookup is by a digest of the secret: how long it takes tells an
        # attacker nothing about the keys it is compared with.
        return self._tenant_by_digest.get(api_key_sha256(key))
