"""Bearer API keys. With keys configured, writes always need one; reads need one only with
``protect_reads`` (so a public search page can sit beside a protected ingest API)."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="API key, sent as `Authorization: Bearer <key>`")


class ApiKeys:
    def __init__(self, keys: tuple[str, ...], protect_reads: bool = False):
        self._keys = [k.encode() for k in keys]
        self.protect_reads = protect_reads

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def _valid(self, key: str) -> bool:
        given = key.encode("utf-8", "surrogateescape")
        # compare with every key (no early exit) so timing says nothing about which matched
        return sum(hmac.compare_digest(given, k) for k in self._keys) > 0

    def _check(self, creds: HTTPAuthorizationCredentials | None) -> None:
        if creds is None:
            raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": 'Bearer realm="polylate"'})
        if not self._valid(creds.credentials):
            raise HTTPException(401, "invalid API key",
                                headers={"WWW-Authenticate": 'Bearer realm="polylate", error="invalid_token"'})

    def write_dependency(self):
        def require_key_for_write(creds: HTTPAuthorizationCredentials | None = Security(_bearer)) -> None:
            if self.enabled:
                self._check(creds)

        return require_key_for_write

    def read_dependency(self):
        def require_key_for_read(creds: HTTPAuthorizationCredentials | None = Security(_bearer)) -> None:
            if self.enabled and self.protect_reads:
                self._check(creds)

        return require_key_for_read
