"""API keys and admission limits, pure parts: key hashing and the keys file round trip (``pdserve keys
add`` included), the token bucket, per-key and deployment limits, the gate, and the tenant's cache salt."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.api.admission import effective_cache_salt
from orchestrator.auth import Gate, KeyFile, KeyRecord, Limits, Refused, TokenBucket, hash_key, new_key
from orchestrator.auth.keys import append_key, parse_keys, read_keys
from orchestrator.cli import main
from orchestrator.config import AuthConfig
from orchestrator.scheduler.hashing import make_salt


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keys_are_random_and_stored_as_sha256() -> None:
    a, b = new_key(), new_key()
    assert a != b and a.startswith("pds-") and len(a) > 40
    assert hash_key(a) == hash_key(a) != hash_key(b)
    assert len(hash_key(a)) == 64 and a not in hash_key(a)


def test_keys_file_round_trip_holds_no_plain_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    key, admin_key = new_key(), new_key()
    append_key(path, KeyRecord("acme", hash_key(key), max_concurrency=2, requests_per_minute=30))
    append_key(path, KeyRecord("ops", hash_key(admin_key), admin=True))
    assert os.stat(path).st_mode & 0o777 == 0o600
    text = path.read_text()
    assert key not in text and admin_key not in text
    records = read_keys(path)
    assert records == [KeyRecord("acme", hash_key(key), False, 2, 30), KeyRecord("ops", hash_key(admin_key), True)]
    keys = KeyFile(path)
    found = keys.lookup(key)
    assert found is not None and found.tenant == "acme" and found.key_id == hash_key(key)[:12]
    assert keys.lookup("pds-nope") is None


def test_keys_file_errors_name_the_line_not_its_text(tmp_path: Path) -> None:
    lines = ["# comment", "", json.dumps({"tenant": "a b", "key_sha256": "0" * 64}),
             json.dumps({"tenant": "x", "key_sha256": "secretish"}), "{not json",
             json.dumps({"tenant": "x", "key_sha256": "0" * 64, "colour": 1})]
    with pytest.raises(ValueError) as info:
        parse_keys(lines, "k")
    message = str(info.value)
    assert [line.split(":")[1] for line in message.splitlines()] == ["3", "4", "5", "6"]
    assert "secretish" not in message


def test_keys_file_reloads_on_change_and_keeps_old_keys_on_a_bad_change(tmp_path: Path) -> None:
    path, clock = tmp_path / "keys.jsonl", Clock()
    first, second = new_key(), new_key()
    append_key(path, KeyRecord("a", hash_key(first)))
    keys = KeyFile(path, check_interval_s=1.0, clock=clock)
    append_key(path, KeyRecord("b", hash_key(second)))
    assert keys.lookup(second) is None  # not checked again yet
    clock.now += 1.5
    assert keys.lookup(second) is not None
    with path.open("a") as out:
        out.write("garbage\n")
    clock.now += 1.5
    assert keys.lookup(first) is not None and keys.lookup(second) is not None


def test_pdserve_keys_add_prints_a_key_once_and_stores_its_hash(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.jsonl"
    assert main(["keys", "add", "acme", "--file", str(path), "--max-concurrency", "3", "--rpm", "60"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("pds-") and key not in out.err and key not in path.read_text()
    record = KeyFile(path).lookup(key)
    assert record == KeyRecord("acme", hash_key(key), False, 3, 60)
    assert main(["keys", "add", "bad tenant", "--file", str(path)]) == 2


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket.per_minute(2)  # 2 at once, then one every 30 s
    assert bucket.take(0.0) == 0 and bucket.take(0.0) == 0
    assert bucket.take(0.0) == pytest.approx(30.0)
    assert bucket.take(15.0) == pytest.approx(15.0)
    assert bucket.take(30.0) == 0
    assert bucket.take(1000.0) == 0 and bucket.take(1000.0) == 0 and bucket.take(1000.0) > 0  # capped at 2


def test_limits_per_key_concurrency_rate_and_deployment() -> None:
    clock = Clock()
    limits = Limits(max_in_flight=3, clock=clock)
    a1 = limits.admit("a", max_concurrency=2)
    limits.admit("a", max_concurrency=2)
    with pytest.raises(Refused) as info:
        limits.admit("a", max_concurrency=2)
    assert info.value.reason == "key_concurrency" and info.value.retry_after_s >= 1
    a1.release()
    a1.release()  # idempotent
    assert limits.key_in_flight("a") == 1 and limits.in_flight == 1
    limits.admit("a", max_concurrency=2)
    limits.admit()
    with pytest.raises(Refused) as busy:
        limits.admit("b", requests_per_minute=1)
    assert busy.value.reason == "server_busy"
    rate = Limits(max_in_flight=None, clock=clock)
    rate.admit("b", requests_per_minute=1).release()  # the refused request above spent no token
    with pytest.raises(Refused) as limited:
        rate.admit("b", requests_per_minute=1)
    assert limited.value.reason == "key_rate" and limited.value.retry_after_s == 60
    clock.now += 60
    rate.admit("b", requests_per_minute=1)


def test_gate_authenticates_bearer_keys_and_applies_their_limits(tmp_path: Path) -> None:
    path, key = tmp_path / "keys.jsonl", new_key()
    append_key(path, KeyRecord("acme", hash_key(key), max_concurrency=1))
    gate = Gate(AuthConfig(keys_file=str(path), protect_metrics=True), max_in_flight=None)
    assert gate.enabled and gate.protect_metrics and not gate.protect_health
    for header in (None, "", key, f"Basic {key}", "Bearer ", "Bearer pds-wrong"):
        assert gate.authenticate(header) is None
    caller = gate.authenticate(f"Bearer {key}")
    assert caller is not None and caller.tenant == "acme" and not caller.admin and key not in repr(caller)
    ticket = gate.admit(caller)
    with pytest.raises(Refused):
        gate.admit(caller)
    ticket.release()
    gate.admit(caller)
    off = Gate(AuthConfig(protect_metrics=True), max_in_flight=None)
    assert not off.enabled and not off.protect_metrics and off.authenticate(f"Bearer {key}") is None


def test_tenant_salts_the_cache_and_the_request_salt_splits_within_it() -> None:
    assert effective_cache_salt(None, None) is None and effective_cache_salt(None, "s") == "s"
    salts = {effective_cache_salt("a", None), effective_cache_salt("b", None), effective_cache_salt("a", "s"),
             effective_cache_salt("b", "s")}
    assert len(salts) == 4
    assert len({make_salt("m", s) for s in salts} | {make_salt("m", None)}) == 5
