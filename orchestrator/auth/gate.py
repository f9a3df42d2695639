"""The front end's gate: who is calling (``authenticate``) and whether they may start a request now
(``admit``). Built from ``auth`` and ``server.max_in_flight`` of the config.

Without ``auth.keys_file`` authentication is off: every caller is anonymous (``authenticate`` is not
needed) and only the deployment's in-flight bound applies. With it, a request must carry
``Authorization: Bearer KEY`` for a key on file; the key's tenant salts the prefix caches and its limits
apply. ``protect_metrics`` / ``protect_health`` put ``/metrics`` / ``/health`` behind an admin key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.auth.keys import KeyFile, KeyRecord
from orchestrator.auth.limits import Limits, Ticket
from orchestrator.config import AuthConfig


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its tenant, whether its key is an admin key, and the key's safe id."""

    tenant: str
    admin: bool
    key_id: str


class Gate:
    def __init__(self, auth: AuthConfig, max_in_flight: int | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = auth.keys_file is not None
        self.protect_metrics = self.enabled and auth.protect_metrics
        self.protect_health = self.enabled and auth.protect_health
        self._keys = KeyFile(auth.keys_file, clock=clock) if auth.keys_file is not None else None
        self._records: dict[str, KeyRecord] = {}
        self.limits = Limits(max_in_flight, clock)

    def authenticate(self, authorization: str | None) -> Caller | None:
        """The caller an ``Authorization`` header value names, or None (missing, malformed, unknown key)."""
        if self._keys is None or not authorization:
            return None
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        record = self._keys.lookup(key)
        if record is None:
            return None
        self._records[record.key_id] = record
        return Caller(record.tenant, record.admin, record.key_id)

    def admit(self, caller: Caller | None) -> Ticket:
        """Admit one request of ``caller`` (None: anonymous) or raise ``Refused``."""
        record = self._records.get(caller.key_id) if caller is not None else None
        if record is None:
            return self.limits.admit()
        return self.limits.admit(record.key_sha256, record.max_concurrency, record.requests_per_minute)
