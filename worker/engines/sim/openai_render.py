"""Response bodies of the sim HTTP face, in the shapes vLLM's OpenAI server answers (vLLM 0.32:
``CompletionResponse``, ``CompletionStreamResponse``, ``ChatCompletionResponse``,
``ChatCompletionStreamResponse``, ``UsageInfo``, ``ErrorResponse``). Pure functions over one ``Call``;
the route code (``openai_face``) decides what to send when.

Differences from vLLM, on purpose: ``usage.prompt_tokens_details.cached_tokens`` is always reported (vLLM
needs ``--enable-prompt-tokens-details``); the prefill of a P/D pair returns ``kv_transfer_params`` in
NixlConnector's shape with pdserve's ``KVHandoff`` translated by ``transfer.handoff``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from protocol.types import KVHandoff
from transfer.handoff import handoff_to_vllm

Kind = Literal["completion", "chat"]
Body = dict[str, object]


@dataclass
class Call:
    """One HTTP request being served: what its answer needs to carry, plus the counts so far."""

    kind: Kind
    id: str
    model: str
    created: int
    prompt: list[int]
    include_usage: bool = False
    continuous_usage: bool = False
    return_token_ids: bool = False
    output: list[int] = field(default_factory=list)
    cached: int = 0

    def usage(self) -> Body:
        n_out = len(self.output)
        return {"prompt_tokens": len(self.prompt), "total_tokens": len(self.prompt) + n_out,
                "completion_tokens": n_out, "prompt_tokens_details": {"cached_tokens": self.cached}}


def prefill_params(handoff: KVHandoff) -> Body:
    """The ``kv_transfer_params`` vLLM's NixlConnector (pull mode) returns for a finished prefill:
    ``request_finished``'s keys, with the held blocks named by pdserve's handoff record."""
    return {**handoff_to_vllm(handoff), "dcp_size": 1, "pp_size": 1, "remote_num_tokens": handoff.prompt_tokens,
            "remote_blocks_expiry_time": None, "transfer_mode": "pull"}


def _choice(call: Call, text: str, ids: list[int], finish: str | None, *, stream: bool, first: bool) -> Body:
    if call.kind == "completion":
        choice: Body = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}
    elif stream:
        delta: Body = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, "stop_reason": None}
    else:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish, "stop_reason": None}
    if call.return_token_ids:
        choice["token_ids"] = ids
        if first and call.kind == "completion":
            choice["prompt_token_ids"] = call.prompt
    return choice


def response(call: Call, text: str, finish: str | None, handoff: KVHandoff | None) -> Body:
    """The whole answer of a non-streamed request."""
    body: Body = {"id": call.id, "object": "text_completion" if call.kind == "completion" else "chat.completion",
                  "created": call.created, "model": call.model,
                  "choices": [_choice(call, text, call.output, finish, stream=False, first=True)],
                  "usage": call.usage(), "kv_transfer_params": prefill_params(handoff) if handoff else None}
    if call.kind == "chat" and call.return_token_ids:
        body["prompt_token_ids"] = call.prompt
    return body


def chunk(call: Call, text: str, ids: list[int], finish: str | None, *, first: bool) -> str:
    """One SSE event carrying new text (and ids) of a streamed request."""
    body: Body = {"id": call.id, "object": _chunk_object(call), "created": call.created, "model": call.model,
                  "choices": [_choice(call, text, ids, finish, stream=True, first=first)]}
    if call.kind == "chat" and first and call.return_token_ids:
        body["prompt_token_ids"] = call.prompt
    if call.continuous_usage:
        body["usage"] = call.usage()
    elif call.include_usage:
        body["usage"] = None
    return sse(body)


def usage_chunk(call: Call) -> str:
    """The last event of a stream with ``include_usage``: no choices, the final usage."""
    return sse({"id": call.id, "object": _chunk_object(call), "created": call.created, "model": call.model,
                "choices": [], "usage": call.usage()})


def _chunk_object(call: Call) -> str:
    return "text_completion" if call.kind == "completion" else "chat.completion.chunk"


def sse(body: Body) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"


def error(status: int, message: str, param: str | None = None) -> Body:
    """vLLM's ``ErrorResponse``: ``code`` is the HTTP status, ``type`` its error class name."""
    kind = {400: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}.get(
        status, "InternalServerError")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}
