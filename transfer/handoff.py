"""vLLM's ``kv_transfer_params`` <-> pdserve's ``KVHandoff`` wire record (``protocol.types``).

A prefill worker runs a prompt with ``do_remote_decode`` and gets back, from vLLM's NixlConnector, the
parameters a decode worker needs to pull the prompt's KV blocks over NIXL. pdserve carries them as a
``KVHandoff`` everywhere (gRPC, orchestrator, decode) and turns them back into vLLM's dict only at the
engine edge, with the functions here. Every function returns a fresh object and mutates nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from protocol.types import KVHandoff

# kv_transfer_params keys with a field of their own in KVHandoff; any other key goes to ``extra``.
_KNOWN = frozenset({"do_remote_prefill", "do_remote_decode", "remote_engine_id", "remote_block_ids",
                    "remote_host", "remote_port", "tp_size", "remote_request_id"})


def handoff_to_vllm(handoff: KVHandoff) -> dict[str, object]:
    """The ``kv_transfer_params`` a decode request passes to vLLM (a fresh dict; caller owns it).
    ``extra`` fields are decoded from JSON; they never override a field pdserve sets itself."""
    params: dict[str, object] = {
        "do_remote_prefill": True,
        "do_remote_decode": False,
        "remote_engine_id": handoff.engine_id,
        "remote_block_ids": [list(group) for group in handoff.block_ids],
        "remote_request_id": handoff.request_id,
        "remote_host": handoff.host,
        "remote_port": handoff.port,
        "tp_size": handoff.tp_size,
    }
    for key, value in handoff.extra:
        params.setdefault(key, json.loads(value))
    return params


def handoff_from_vllm(
    params: Mapping[str, object],
    *,
    first_token: int,
    num_cached_tokens: int,
    prompt_tokens: int,
    lease_deadline: float,
) -> KVHandoff:
    """Build from the ``kv_transfer_params`` vLLM returned for a finished prefill.

    Raises ``ValueError`` when a required field is missing (the connector did not hold blocks).
    """
    try:
        engine_id = str(_required(params, "remote_engine_id"))
        block_ids = _block_groups(params["remote_block_ids"])
        host = str(_required(params, "remote_host"))
        port = int(params["remote_port"])  # type: ignore[call-overload]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"prefill returned incomplete kv_transfer_params: {dict(params)!r}") from exc
    extra = tuple(sorted((k, json.dumps(v)) for k, v in params.items() if k not in _KNOWN))
    return KVHandoff(
        engine_id=engine_id,
        block_ids=block_ids,
        host=host,
        port=port,
        tp_size=int(params.get("tp_size", 1) or 1),  # type: ignore[call-overload]
        request_id=str(params.get("remote_request_id") or ""),
        first_token=first_token,
        num_cached_tokens=num_cached_tokens,
        prompt_tokens=prompt_tokens,
        lease_deadline=lease_deadline,
        extra=extra,
    )


def _required(params: Mapping[str, object], key: str) -> object:
    """``params[key]``; a None value counts as missing (``str(None)`` would make a bogus id)."""
    value = params[key]
    if value is None:
        raise KeyError(key)
    return value


def _block_groups(raw: object) -> tuple[tuple[int, ...], ...]:
    """vLLM gives one list of block ids per KV-cache group (older versions: one flat list)."""
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise TypeError(f"remote_block_ids is not a list: {raw!r}")
    if raw and all(isinstance(g, Sequence) for g in raw):
        return tuple(tuple(int(b) for b in g) for g in raw)  # type: ignore[union-attr]
    return (tuple(int(b) for b in raw),)  # type: ignore[call-overload]


def remote_decode_request_params() -> dict[str, object]:
    """The ``kv_transfer_params`` a prefill request passes so vLLM keeps its blocks for a remote decode."""
    return {
        "do_remote_decode": True,
        "do_remote_prefill": False,
        "remote_engine_id": None,
        "remote_block_ids": None,
        "remote_host": None,
        "remote_port": None,
    }
