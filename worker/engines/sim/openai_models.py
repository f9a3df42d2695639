"""The request bodies the sim HTTP face (``openai_face``) accepts: vLLM's OpenAI API shapes, cut to what a
simulated engine implements. A field vLLM 0.32 itself does not know is dropped, as vLLM drops it (routers
add their own, e.g. sglang-router's ``no_stop_trim``); a field vLLM knows but the face does not implement
is refused, and fields that only make sense with a value the face does not implement accept just their
no-op value (``n`` 1, ``echo`` false, ``logprobs`` false, no stop strings), so a request is never
half-served: it is refused with a 400 naming the field.

``KvTransferParams`` is vLLM's NixlConnector ``kv_transfer_params`` (the keys it reads and the keys its
``request_finished`` returns); ``transfer.handoff`` translates it to pdserve's ``KVHandoff``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

StrictFloat = Annotated[float, Field(strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The request fields of vLLM 0.32's ChatCompletionRequest and CompletionRequest (the installed package's
# ``model_fields``; tests/unit/sim/test_sim_openai_face.py compares them with it when vLLM is importable).
VLLM_COMMON_FIELDS = frozenset({
    "add_special_tokens", "allowed_token_ids", "bad_words", "cache_salt", "ec_transfer_params", "echo",
    "frequency_penalty", "ignore_eos", "include_stop_str_in_output", "kv_transfer_params", "length_penalty",
    "logit_bias", "logprob_token_ids", "logprobs", "max_tokens", "min_p", "min_tokens", "mm_payload", "model",
    "n", "presence_penalty", "priority", "prompt_logprobs", "repetition_detection", "repetition_penalty",
    "request_id", "response_format", "return_mm_kwargs", "return_token_ids", "return_token_offsets",
    "return_tokens_as_token_ids", "routed_experts_prompt_start", "seed", "session_id", "skip_special_tokens",
    "spaces_between_special_tokens", "stop", "stop_token_ids", "stream", "stream_interval", "stream_options",
    "structured_outputs", "temperature", "thinking_token_budget", "top_k", "top_p", "truncate_prompt_tokens",
    "truncation_side", "use_beam_search", "user", "vllm_xargs", "watermarking"})
VLLM_COMPLETION_FIELDS = VLLM_COMMON_FIELDS | {"prompt", "prompt_embeds", "suffix"}
VLLM_CHAT_FIELDS = VLLM_COMMON_FIELDS | {
    "add_generation_prompt", "chat_template", "chat_template_kwargs", "continue_final_message", "documents",
    "include_reasoning", "max_completion_tokens", "media_io_kwargs", "messages", "mm_processor_kwargs",
    "parallel_tool_calls", "reasoning_effort", "return_prompt_text", "tool_choice", "tools", "top_logprobs"}


class StreamOptions(_Strict):
    """``include_usage``: a last chunk with ``usage`` (and ``"usage": null`` on the others);
    ``continuous_usage_stats``: ``usage`` on every chunk."""

    include_usage: StrictBool | None = False
    continuous_usage_stats: StrictBool | None = False


class KvTransferParams(_Strict):
    """vLLM's P/D request parameters. A prefill request sets ``do_remote_decode`` (the rest null); a
    decode request carries what the prefill's response returned (``do_remote_prefill`` true)."""

    do_remote_decode: StrictBool = False
    do_remote_prefill: StrictBool = False
    remote_engine_id: str | None = None
    remote_block_ids: list[list[StrictInt]] | list[StrictInt] | None = None
    remote_request_id: str | None = None
    remote_host: str | None = None
    remote_port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    tp_size: StrictInt | None = None
    dcp_size: StrictInt | None = None
    pp_size: StrictInt | None = None
    remote_num_tokens: StrictInt | None = None
    remote_blocks_expiry_time: StrictFloat | None = None
    transfer_mode: Literal["pull"] | None = None

    @model_validator(mode="after")
    def _one_role(self) -> KvTransferParams:
        if self.do_remote_decode and self.do_remote_prefill:
            raise ValueError("do_remote_decode and do_remote_prefill cannot both be true")
        if self.do_remote_prefill and None in (self.remote_engine_id, self.remote_block_ids, self.remote_host,
                                               self.remote_port, self.remote_request_id):
            raise ValueError("do_remote_prefill needs remote_engine_id, remote_block_ids, remote_request_id, "
                             "remote_host and remote_port (the prefill response's kv_transfer_params)")
        return self


class _Sampling(_Strict):
    """Fields both endpoints share. The sim engine's tokens are a deterministic function of the prompt,
    the position and a sampling nonce (0 when ``temperature`` is 0, from ``seed`` when set, else random);
    ``top_p`` is carried but changes nothing. ``max_tokens`` None: up to the context length."""

    VLLM_FIELDS: ClassVar[frozenset[str]]  # the endpoint's request fields in vLLM; others are dropped
    model: str | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(strict=True, ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(strict=True, gt=0.0, le=1.0)] | None = None
    seed: StrictInt | None = None
    n: Literal[1] = 1
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[Annotated[StrictInt, Field(ge=0)]] | None = None
    ignore_eos: StrictBool = False
    user: str | None = None
    request_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    cache_salt: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    kv_transfer_params: KvTransferParams | None = None
    return_token_ids: StrictBool | None = None
    # No-op values only: the sim engine returns no log probabilities and its text has no special tokens.
    logprobs: Literal[False] | None = None
    skip_special_tokens: Literal[True] = True

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_to_vllm(cls, body: object) -> object:
        """``body`` without the keys vLLM would ignore (not fields of its request model); a new dict."""
        return {k: v for k, v in body.items() if k in cls.VLLM_FIELDS} if isinstance(body, dict) else body

    @field_validator("stop")
    @classmethod
    def _no_stop_strings(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if stop:
            raise ValueError("stop strings are not implemented by the simulated engine; use stop_token_ids")
        return stop

    @model_validator(mode="after")
    def _stream_shape(self) -> _Sampling:
        if self.stream_options is not None and not self.stream:
            raise ValueError("Stream options can only be defined when `stream=True`.")
        if self.stream and self.kv_transfer_params is not None and self.kv_transfer_params.do_remote_decode:
            raise ValueError("a prefill (do_remote_decode) answers kv_transfer_params in its body: use stream=false")
        return self


class CompletionRequest(_Sampling):
    """``/v1/completions``: one prompt, as text (needs the server's tokenizer) or as token ids.
    ``max_tokens`` defaults to 16, as vLLM's."""

    VLLM_FIELDS = VLLM_COMPLETION_FIELDS
    prompt: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[StrictInt, Field(ge=0)]],
                                                            Field(min_length=1)]
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = 16
    echo: Literal[False] | None = False
    suffix: None = None
    add_special_tokens: StrictBool = True
    logprobs: None = None  # completions' logprobs is a count; no-op only when absent or null


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    """``/v1/chat/completions``: messages rendered with the tokenizer's chat template.
    ``max_completion_tokens`` is OpenAI's newer name for ``max_tokens`` and wins when both are given
    (vLLM's rule; routers that turn a request into a prefill set both)."""

    VLLM_FIELDS = VLLM_CHAT_FIELDS
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    add_generation_prompt: StrictBool = True
    continue_final_message: Literal[False] = False
    top_logprobs: Literal[0] | None = None
    include_reasoning: StrictBool = True  # no reasoning parser: a no-op either way, as in vLLM without one

    def limit(self) -> int | None:
        """The output budget asked for (None: what the context leaves)."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
