"""KVHandoff <-> vLLM kv_transfer_params <-> protobuf: per-group block ids, JSON-typed extras."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.convert import handoff_from_pb, handoff_to_pb
from protocol.types import KVHandoff
from protocol.worker_pb2 import Handoff as PbHandoff
from transfer.handoff import handoff_from_vllm, handoff_to_vllm, remote_decode_request_params

EXTRAS: dict[str, Any] = {"x_int": 3, "x_float": 1.5, "x_str": "s", "x_bool": True, "x_none": None,
                          "x_list": [1, "a", None], "x_dict": {"a": {"b": [1.25]}}, "x_digits": "007"}
VLLM_PARAMS: dict[str, Any] = {
    "do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": "engine-1",
    "remote_block_ids": [[1, 2, 3], [7]], "remote_request_id": "req-9", "remote_host": "127.0.0.1",
    "remote_port": 5601, "tp_size": 2, **EXTRAS,
}


def build(params: dict[str, Any]) -> KVHandoff:
    return handoff_from_vllm(params, first_token=42, num_cached_tokens=64, prompt_tokens=70,
                             lease_deadline=1_700_000_000.25)


def test_from_vllm_reads_every_field() -> None:
    h = build(VLLM_PARAMS)
    assert (h.engine_id, h.host, h.port, h.tp_size, h.request_id) == ("engine-1", "127.0.0.1", 5601, 2, "req-9")
    assert h.block_ids == ((1, 2, 3), (7,))
    assert h.num_blocks == 4
    assert (h.first_token, h.num_cached_tokens, h.prompt_tokens, h.lease_deadline) == (42, 64, 70, 1_700_000_000.25)
    assert [k for k, _ in h.extra] == sorted(EXTRAS)
    assert all(isinstance(v, str) for _, v in h.extra)


def test_to_vllm_gives_back_what_vllm_sent_with_types() -> None:
    params = handoff_to_vllm(build(VLLM_PARAMS))
    assert params == VLLM_PARAMS
    assert type(params["x_float"]) is float and type(params["x_int"]) is int and params["x_digits"] == "007"


def test_to_vllm_is_a_fresh_dict_each_time() -> None:
    h = build(VLLM_PARAMS)
    first = handoff_to_vllm(h)
    groups, extra = first["remote_block_ids"], first["x_list"]
    assert isinstance(groups, list) and isinstance(extra, list)
    groups[0].append(99)
    extra.append(5)
    assert handoff_to_vllm(h) == VLLM_PARAMS


def test_the_prefill_side_flags_are_turned_into_decode_side_flags() -> None:
    returned_by_prefill = {**VLLM_PARAMS, "do_remote_prefill": False, "do_remote_decode": True}
    params = handoff_to_vllm(build(returned_by_prefill))
    assert params["do_remote_prefill"] is True and params["do_remote_decode"] is False


def test_known_keys_win_over_extras() -> None:
    h = KVHandoff("e", ((1,),), "h", 1, extra=(("remote_port", "9"), ("x", "1")))
    params = handoff_to_vllm(h)
    assert params["remote_port"] == 1 and params["x"] == 1


@pytest.mark.parametrize(("raw", "groups"), [
    ([[1, 2], [3]], ((1, 2), (3,))),
    ([4, 5, 6], ((4, 5, 6),)),  # older vLLM: one flat list
    ((8, 9), ((8, 9),)),
    ([[1], []], ((1,), ())),
    ([[]], ((),)),
])
def test_block_id_layouts(raw: Any, groups: tuple[tuple[int, ...], ...]) -> None:
    h = build({**VLLM_PARAMS, "remote_block_ids": raw})
    assert h.block_ids == groups
    assert handoff_to_vllm(h)["remote_block_ids"] == [list(g) for g in groups]


@pytest.mark.parametrize("change", [
    {"remote_engine_id": None}, {"remote_host": None}, {"remote_port": None}, {"remote_block_ids": None},
    {"remote_block_ids": "123"}, {"remote_block_ids": 5},
])
def test_incomplete_params_are_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="incomplete kv_transfer_params"):
        build({**VLLM_PARAMS, **change})


@pytest.mark.parametrize("key", ["remote_engine_id", "remote_host", "remote_port", "remote_block_ids"])
def test_missing_required_key_is_rejected(key: str) -> None:
    params = dict(VLLM_PARAMS)
    del params[key]
    with pytest.raises(ValueError, match="incomplete kv_transfer_params"):
        build(params)


def test_optional_fields_default() -> None:
    params = {k: VLLM_PARAMS[k] for k in ("remote_engine_id", "remote_block_ids", "remote_host", "remote_port")}
    h = build({**params, "tp_size": None, "remote_request_id": None})
    assert (h.tp_size, h.request_id, h.extra) == (1, "", ())


def test_protobuf_round_trip_keeps_everything() -> None:
    h = build(VLLM_PARAMS)
    wire = handoff_to_pb(h).SerializeToString()
    back = handoff_from_pb(PbHandoff.FromString(wire))
    assert back == h
    assert handoff_to_vllm(back) == VLLM_PARAMS  # extras keep their JSON types through protobuf


def test_protobuf_round_trip_of_a_minimal_handoff() -> None:
    h = KVHandoff(engine_id="e", block_ids=((),), host="h", port=0)
    assert handoff_from_pb(PbHandoff.FromString(handoff_to_pb(h).SerializeToString())) == h


def test_protobuf_keeps_large_block_ids_and_group_count() -> None:
    h = KVHandoff("e", ((2**40, 0), (), (3,)), "h", 65535, first_token=-1)
    back = handoff_from_pb(PbHandoff.FromString(handoff_to_pb(h).SerializeToString()))
    assert back.block_ids == ((2**40, 0), (), (3,)) and back.first_token == -1


def test_remote_decode_request_params() -> None:
    params = remote_decode_request_params()
    assert params["do_remote_decode"] is True and params["do_remote_prefill"] is False
    assert params is not remote_decode_request_params()
