"""The keys file: one JSON object per line, each a key of one tenant, stored as its sha256.

    {"tenant": "acme", "key_sha256": "<64 hex>", "admin": false, "max_concurrency": 4, "requests_per_minute": 120}

``admin``, ``max_concurrency`` and ``requests_per_minute`` are optional (no limit when absent or null).
Keys are random (``new_key``: 256 bits), so a plain sha256 is enough to store them (as with GitHub or
Stripe tokens; a slow password hash would only slow every request). The plain key is printed once by
``pdserve keys add`` and never stored, logged or exported as a metric; ``KeyRecord.key_id`` (a prefix of
the hash) is what may be shown. Blank lines and lines starting with ``#`` are ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KEY_PREFIX = "pds-"
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def new_key() -> str:
    """A fresh random API key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of ``key``: its sha256, as 64 lowercase hex digits."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """One key of ``tenant``. ``None`` limits mean unlimited."""

    tenant: str
    key_sha256: str
    admin: bool = False
    max_concurrency: int | None = None
    requests_per_minute: float | None = None

    def __post_init__(self) -> None:
        if not TENANT_RE.match(self.tenant):
            raise ValueError(f"tenant {self.tenant!r}: use 1-64 letters, digits, '.', '_' or '-'")
        if not _HEX64.match(self.key_sha256):
            raise ValueError("key_sha256 must be 64 lowercase hex digits")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.requests_per_minute is not None and self.requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be > 0")

    @property
    def key_id(self) -> str:
        """A short id of the key that is safe to show (a prefix of its hash, never the key)."""
        return self.key_sha256[:12]

    def to_line(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (None, False)}, separators=(", ", ": "))


_FIELDS = frozenset(KeyRecord.__dataclass_fields__)


def parse_keys(lines: Iterable[str], source: str = "<keys>") -> list[KeyRecord]:
    """The records of a keys file's lines; ``ValueError`` naming every bad line (by number, never its text)."""
    records: list[KeyRecord] = []
    problems: list[str] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ValueError("expected a JSON object")
            unknown = set(raw) - _FIELDS
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(unknown)}")
            records.append(KeyRecord(**raw))
        except (ValueError, TypeError) as exc:
            problems.append(f"{source}:{number}: {exc}")
    if problems:
        raise ValueError("\n".join(problems))
    return records


def read_keys(path: str | Path) -> list[KeyRecord]:
    path = Path(path)
    return parse_keys(path.read_text().splitlines(), str(path))


def append_key(path: str | Path, record: KeyRecord) -> None:
    """Append ``record`` to the keys file (created with mode 0600 when missing)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(record.to_line() + "\n")


class KeyFile:
    """The keys of a file, looked up by key. The file is re-read when it changes (checked at most every
    ``check_interval_s``), so ``pdserve keys add`` takes effect without a restart; a change that does not
    parse is logged and the previous keys stay in force."""

    def __init__(self, path: str | Path, check_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._interval = check_interval_s
        self._clock = clock
        self._by_hash: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = clock()
        self._load(strict=True)

    def _load(self, strict: bool) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            records = read_keys(self.path)
        except ValueError as exc:
            if strict:
                raise
            log.warning("keys file %s not reloaded, keeping the previous keys: %s", self.path, exc)
            self._stamp = stamp
            return
        self._by_hash = {r.key_sha256: r for r in records}
        self._stamp = stamp
        log.info("keys file %s: %d key(s) of %d tenant(s)", self.path, len(records),
                 len({r.tenant for r in records}))

    def lookup(self, key: str) -> KeyRecord | None:
        """The record of ``key``, or None when no such key is on file."""
        now = self._clock()
        if now - self._checked >= self._interval:
            self._checked = now
            try:
                self._load(strict=False)
            except OSError as exc:
                log.warning("keys file %s not readable, keeping the previous keys: %s", self.path, exc)
        return self._by_hash.get(hash_key(key))
