"""From a validated request body to the flow's request, before anything is sent to a worker.

The prompt is tokenized once here (the chat template for chat, the text or the token ids for a
completion), checked against the model's context length, and the sampling spec is filled in
(``max_tokens`` defaults to the rest of the context, capped by ``limits.default_max_tokens``). Every
problem is an ``APIError`` (400, or 404 for another model's name).
"""

from __future__ import annotations

from orchestrator.api.errors import bad_request, not_found_model
from orchestrator.api.schemas import ChatCompletionRequest, CompletionRequest
from orchestrator.api.text import Tokenizer
from orchestrator.frontend import FlowRequest, ModelCard
from protocol.types import SamplingSpec

Body = ChatCompletionRequest | CompletionRequest


def chat_prompt(body: ChatCompletionRequest, tokenizer: Tokenizer) -> list[int]:
    """The chat template applied to the messages (``developer`` is sent as ``system``), tokenized."""
    messages = [{"role": m.role if m.role != "developer" else "system", "content": m.text()}
                for m in body.messages]
    return tokenizer.chat_prompt(messages)


def completion_prompt(body: CompletionRequest, tokenizer: Tokenizer) -> list[int]:
    """The prompt's token ids: the text tokenized, or the ids given (each in the vocabulary). Never empty."""
    if isinstance(body.prompt, str):
        prompt = tokenizer.encode(body.prompt)
    else:
        prompt = [int(t) for t in body.prompt]
        if any(t < 0 for t in prompt):
            raise bad_request("prompt token ids must be non-negative", "prompt")
        if any(t >= tokenizer.vocab_size for t in prompt):
            raise bad_request(f"Token id {max(prompt)} is out of vocabulary (the model's token ids are below "
                              f"{tokenizer.vocab_size}).", "prompt")
    if not prompt:
        raise bad_request("the prompt is empty", "prompt")
    return prompt


def sampling_spec(body: Body, prompt_len: int, max_len: int, eos_token_id: int | None,
                  default_max_tokens: int | None = None) -> SamplingSpec:
    """The sampling spec of ``body`` for a prompt of ``prompt_len`` tokens; 400 when prompt and requested
    completion do not fit in ``max_len`` tokens. A request without ``max_tokens`` gets the rest of the
    context, at most ``default_max_tokens`` (``limits.default_max_tokens``)."""
    requested = body.requested_max_tokens()
    if prompt_len >= max_len:
        raise bad_request(f"The prompt has {prompt_len} tokens; this model's context is {max_len} tokens.",
                          "messages", "context_length_exceeded")
    if requested is not None and prompt_len + requested > max_len:
        raise bad_request(f"This model's maximum context length is {max_len} tokens. However, you requested "
                          f"{prompt_len + requested} tokens ({prompt_len} in the prompt, {requested} for the "
                          "completion).", "max_tokens", "context_length_exceeded")
    max_tokens = requested if requested is not None else min(max_len - prompt_len,
                                                              default_max_tokens or max_len)
    if body.min_tokens > max_tokens:
        raise bad_request(f"min_tokens ({body.min_tokens}) is more than the completion's {max_tokens} tokens.",
                          "min_tokens")
    json_object, json_schema = body.requested_json()
    stop_ids = [] if eos_token_id is None or body.ignore_eos else [eos_token_id]
    stop_ids += [i for i in body.stop_token_ids or () if i not in stop_ids]
    return SamplingSpec(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                        seed=body.seed, stop_token_ids=tuple(stop_ids), ignore_eos=body.ignore_eos,
                        top_k=max(0, body.top_k or 0), min_tokens=body.min_tokens,
                        presence_penalty=body.presence_penalty or 0.0, frequency_penalty=body.frequency_penalty or 0.0,
                        repetition_penalty=body.repetition_penalty or 1.0,
                        logit_bias=tuple(sorted((int(k), v) for k, v in (body.logit_bias or {}).items())),
                        logprobs=body.requested_logprobs(), json_object=json_object, json_schema=json_schema)


def effective_cache_salt(tenant: str | None, cache_salt: str | None) -> str | None:
    """The salt of the prefix caches (pdserve's block hashes and the engine's ``cache_salt``): the
    tenant's name, then the request's own ``cache_salt`` (which splits further within the tenant), so one
    tenant's prompt never hits another's cache. Without authentication (no tenant): the request's salt.
    Tenant names never contain the separator (``orchestrator.auth.keys.TENANT_RE``)."""
    if tenant is None:
        return cache_salt
    return f"{tenant}\x1f{cache_salt or ''}"


def flow_request(body: Body, prompt: list[int], request_id: str, session_key: str | None, model: ModelCard,
                 tokenizer: Tokenizer, tenant: str | None = None,
                 default_max_tokens: int | None = None) -> FlowRequest:
    """The flow's request for ``body`` and its tokenized ``prompt`` (of ``tenant``, when keys are on) on
    ``model``: a model, or a LoRA adapter (a card with a ``parent``), which the request then runs with;
    404 when ``body`` names another."""
    if body.model != model.name:
        raise not_found_model(body.model)
    spec = sampling_spec(body, len(prompt), model.max_model_len, tokenizer.eos_token_id, default_max_tokens)
    return FlowRequest(request_id=request_id, prompt=tuple(prompt), sampling=spec,
                       cache_salt=effective_cache_salt(tenant, body.cache_salt), session_key=session_key or body.user,
                       lora=model.name if model.parent is not None else None)
