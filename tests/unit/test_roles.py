"""Roles registered by name (``worker.roles``): prefill and decode load from their modules, ``both`` combines
their duties, unknown names fail with the known ones; the role handlers turn typed calls into engine
requests (a fake engine records them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest

from protocol import convert
from protocol.types import GenerateCall, KVHandoff, PrefillCall, SamplingSpec, TokenChunk
from worker import roles
from worker.engine import EngineRequest, TokenDelta
from worker.roles import DutyFailed, Role, load_role, register_role

SPEC = SamplingSpec(max_tokens=8, temperature=0.0)
HANDOFF = KVHandoff(engine_id="p-0", block_ids=((1, 2),), host="127.0.0.1", port=5601, prompt_tokens=3)


@dataclass
class FakeEngine:
    """Yields ``deltas`` for every request and records the requests (only what the roles use)."""

    deltas: list[TokenDelta]
    requests: list[EngineRequest] = field(default_factory=list)

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta]:
        self.requests.append(request)
        for delta in self.deltas:
            yield delta


def test_prefill_and_decode_register_one_duty_each() -> None:
    prefill, decode = load_role("prefill"), load_role("decode")
    assert (prefill.name, prefill.prefill is not None, prefill.generate) == ("prefill", True, None)
    assert (decode.name, decode.prefill, decode.generate is not None) == ("decode", None, True)


def test_both_takes_the_duties_of_prefill_and_decode() -> None:
    both = load_role("both")
    assert both.name == "both"
    assert (both.prefill, both.generate) == (load_role("prefill").prefill, load_role("decode").generate)


@pytest.mark.parametrize("name", ["nope", "os", "not a module", ""])
def test_an_unknown_role_names_the_known_ones(name: str) -> None:
    with pytest.raises(KeyError, match=f"unknown role {name!r}.*known: .*both"):
        load_role(name)


def test_a_name_registers_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(roles, "ROLES", {})
    role = register_role(Role("custom"))
    assert load_role("custom") is role
    with pytest.raises(ValueError, match="registered twice"):
        register_role(Role("custom"))
    with pytest.raises(ValueError, match="registered twice"):
        register_role(Role("both"))


async def test_prefill_runs_one_token_for_a_remote_decode_and_returns_the_handoff() -> None:
    engine = FakeEngine([TokenDelta((42,), finished=True, finish_reason="length", handoff=HANDOFF)])
    call = PrefillCall(request_id="r-p", prompt_token_ids=(1, 2, 3), sampling=SPEC, cache_salt="t")
    handler = load_role("prefill").prefill
    assert handler is not None
    handoff = await handler(engine, call)  # type: ignore[arg-type]
    assert handoff == replace(HANDOFF, first_token=42)  # filled in from the sampled token
    (request,) = engine.requests
    assert (request.request_id, request.prompt_token_ids, request.cache_salt) == ("r-p", (1, 2, 3), "t")
    assert request.remote_decode and request.handoff is None and request.sampling.max_tokens == 1


async def test_a_prefill_without_a_handoff_is_the_workers_fault() -> None:
    engine = FakeEngine([TokenDelta((), finished=True, finish_reason="abort")])
    handler = load_role("prefill").prefill
    assert handler is not None
    with pytest.raises(DutyFailed, match="r-p returned no KV handoff"):
        await handler(engine, PrefillCall(request_id="r-p", prompt_token_ids=(1,), sampling=SPEC))  # type: ignore[arg-type]


async def test_decode_streams_the_engines_deltas_as_chunks() -> None:
    deltas = [TokenDelta((5,), num_cached_tokens=4), TokenDelta((6,), finished=True, finish_reason="stop")]
    engine = FakeEngine(deltas)
    call = GenerateCall(request_id="r-d", prompt_token_ids=(1, 2), sampling=SPEC, handoff=HANDOFF)
    handler = load_role("decode").generate
    assert handler is not None
    chunks = [chunk async for chunk in handler(engine, call)]  # type: ignore[arg-type]
    assert chunks == deltas and all(isinstance(c, TokenChunk) for c in chunks)
    (request,) = engine.requests
    assert (request.request_id, request.handoff, request.sampling) == ("r-d", HANDOFF, SPEC)
    assert not request.remote_decode


def test_an_engine_delta_crosses_the_wire_as_a_plain_chunk() -> None:
    delta = TokenDelta((7,), finished=True, finish_reason="length", num_cached_tokens=2, handoff=HANDOFF)
    back = convert.token_chunk_from_pb(convert.token_chunk_to_pb(delta))
    assert back == TokenChunk((7,), finished=True, finish_reason="length", num_cached_tokens=2)
    assert type(back) is TokenChunk
