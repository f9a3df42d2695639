"""The ``vllm`` engine adapter: vLLM's ``AsyncLLM`` embedded in the worker process.

Token ids in, token-id deltas out (no detokenization in the worker). The KV connector is vLLM's
NixlConnector (``kv_role=kv_both``, so one build serves both roles); a prefill request passes
``do_remote_decode`` and its final output carries vLLM's ``kv_transfer_params``, which become a
``KVHandoff``; a decode request passes the handoff back as ``kv_transfer_params`` and vLLM pulls the
blocks over NIXL before decoding. KV cache events come from vLLM's ZMQ publisher on a private ipc
endpoint. Load figures come from a custom stat logger.

Process-wide settings (NIXL side-channel port, UCX transports, CPU KV space) are environment
variables vLLM reads at start; the worker process sets them from ``EngineSpec.env`` before ``start``.

Deltas carry no ``kv_pull`` (always None). vLLM's NixlConnector measures every transfer (NIXL telemetry:
duration and bytes, ``NixlKVConnectorStats.record_transfer``) but records it without its request id and
hands the stat loggers only lists aggregated over a step, so no transfer can be tied to a request here;
the totals go to ``EngineLoad`` (``kv_bytes_pulled``, ``kv_pull_seconds``). The orchestrator then times
the handoff itself, from the Generate call to the first token: an upper bound of the pull, which also
holds the decode engine's first step (``orchestrator.flow_meter``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from protocol.engine_args import VllmArgs
from protocol.types import EngineInfo, EngineLoad, KvEventBatch, KVHandoff, SamplingSpec, TokenLogprob
from transfer.handoff import handoff_from_vllm, handoff_to_vllm, remote_decode_request_params
from worker.engine import EngineRequest, EngineSpec, HandoffVoid, TokenDelta, register_engine
from worker.engines.vllm_events import KvEventSubscriber
from worker.engines.vllm_lora import LoraRequests, lora_engine_kwargs
from worker.engines.vllm_stats import LoadTracker, stat_logger_factory

DEFAULT_LEASE_TIMEOUT_S = 30.0  # vLLM's own kv_lease_duration default


def _finish_reason(output: Any) -> str | None:
    reason = output.finish_reason
    if reason is None:
        return None
    if reason == "error":
        raise RuntimeError("vLLM ended the request with an error")
    return "length" if reason == "length" else ("abort" if reason == "abort" else "stop")


def _structured(sampling: SamplingSpec) -> Any:
    """vLLM's structured-output constraint for the spec's JSON format, or None."""
    from vllm.sampling_params import StructuredOutputsParams

    if sampling.json_schema is not None:
        return StructuredOutputsParams(json=json.loads(sampling.json_schema))
    return StructuredOutputsParams(json_object=True) if sampling.json_object else None


def _logprobs(tokens: tuple[int, ...], positions: Any, top_n: int | None) -> tuple[TokenLogprob, ...]:
    """The ``TokenLogprob`` of each new token from vLLM's per-position ``{token id: Logprob}`` (the sampled
    token is always there; the ``top_n`` most likely have ranks 1..top_n). Empty when none were asked."""
    if top_n is None or not positions:
        return ()
    out = []
    for token, position in zip(tokens, positions, strict=True):
        ranked = sorted((lp.rank, tid, lp.logprob) for tid, lp in position.items() if lp.rank and lp.rank <= top_n)
        out.append(TokenLogprob(float(position[token].logprob), tuple((tid, float(v)) for _, tid, v in ranked)))
    return tuple(out)


@register_engine("vllm")
class VllmEngine:
    """One vLLM AsyncLLM. Owns the engine core process it starts; ``shutdown`` stops it."""

    def __init__(self, spec: EngineSpec) -> None:
        if not isinstance(spec.args, VllmArgs):
            raise TypeError(f"the vllm engine needs vllm engine args, got kind {spec.args.kind!r}")
        self._spec = spec
        self._args: VllmArgs = spec.args
        self._llm: Any = None
        self._tracker = LoadTracker()
        self._live: set[str] = set()  # request ids submitted and not yet finished or aborted
        self._held_until = 0.0  # wall-clock end of the latest lease on handed-off blocks
        self._subscriber: KvEventSubscriber | None = None
        self._info: EngineInfo | None = None
        self._lease_s = DEFAULT_LEASE_TIMEOUT_S if spec.lease_timeout_s is None else spec.lease_timeout_s
        self._events_endpoint = spec.events_endpoint or f"ipc:///tmp/pdserve-kv-{os.getpid()}"
        self._topic = "kv"
        self._loras = LoraRequests(spec.adapters)

    async def start(self) -> None:
        from vllm.config import KVEventsConfig, KVTransferConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        transfer = KVTransferConfig(
            kv_connector="NixlConnector",
            kv_role="kv_both",
            kv_buffer_device=self._spec.kv_buffer_device,
            # A pull that fails ends the request with finish reason "error", which ``generate`` raises as
            # ``HandoffVoid``: the orchestrator, not the engine, decides between retrying and recomputing.
            kv_load_failure_policy="fail",
            kv_connector_extra_config={
                "kv_lease_duration": int(self._lease_s),
                # Always pull when pdserve chose to disaggregate; pdserve decides short prompts itself.
                "kv_recompute_threshold": 0,
            },
        )
        events = KVEventsConfig(
            enable_kv_cache_events=True, publisher="zmq", endpoint=self._events_endpoint, topic=self._topic
        )
        engine_args = AsyncEngineArgs(
            model=self._spec.model,
            enable_prefix_caching=True,
            kv_transfer_config=transfer,
            kv_events_config=events,
            disable_log_stats=False,
            **{**lora_engine_kwargs(self._spec.adapters), **self._args.engine_kwargs()},
        )
        self._subscriber = KvEventSubscriber(self._events_endpoint, self._topic)
        self._llm = AsyncLLM.from_engine_args(engine_args, stat_loggers=[stat_logger_factory(self._tracker)])
        config = self._llm.vllm_config
        model_config = config.model_config
        cache_config = config.cache_config
        kv_bytes = self._kv_bytes_per_token(model_config, cache_config)
        self._info = EngineInfo(
            engine_id=str(config.kv_transfer_config.engine_id),
            model=self._spec.model,
            block_size=int(cache_config.block_size),
            num_blocks=int(cache_config.num_gpu_blocks or 0),
            max_model_len=int(model_config.max_model_len),
            kv_bytes_per_token=kv_bytes,
        )

    @staticmethod
    def _kv_bytes_per_token(model_config: Any, cache_config: Any) -> int:
        import torch

        hf = model_config.hf_text_config
        layers = int(hf.num_hidden_layers)
        kv_heads = int(getattr(hf, "num_key_value_heads", hf.num_attention_heads))
        head_dim = int(getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads)
        dtype = model_config.dtype if cache_config.cache_dtype == "auto" else torch.float8_e4m3fn
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * layers * kv_heads * head_dim * itemsize

    def info(self) -> EngineInfo:
        if self._info is None:
            raise RuntimeError("engine not started")
        return self._info

    def _sampling_params(self, sampling: SamplingSpec, remote_decode: bool, handoff: KVHandoff | None) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        extra: dict[str, Any] = {}
        if remote_decode:
            extra["kv_transfer_params"] = remote_decode_request_params()
        elif handoff is not None:
            extra["kv_transfer_params"] = handoff_to_vllm(handoff)
        return SamplingParams(
            max_tokens=1 if remote_decode else sampling.max_tokens,
            min_tokens=min(sampling.min_tokens, 1) if remote_decode else sampling.min_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            seed=sampling.seed,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            repetition_penalty=sampling.repetition_penalty,
            logit_bias=dict(sampling.logit_bias) or None,
            logprobs=None if remote_decode else sampling.logprobs,
            # The prefill's one token is not the answer's (the decode worker samples it again).
            structured_outputs=None if remote_decode else _structured(sampling),
            stop_token_ids=list(sampling.stop_token_ids),
            ignore_eos=sampling.ignore_eos,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
            extra_args=extra or None,
        )

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta]:
        from vllm.inputs import TokensPrompt

        prompt = TokensPrompt(prompt_token_ids=list(request.prompt_token_ids))
        if request.cache_salt:
            prompt["cache_salt"] = request.cache_salt
        lora = self._loras.get(request.lora)  # ValueError: an adapter not served here
        if request.handoff is not None:
            self._check_lease(request.handoff)
        params = self._sampling_params(request.sampling, request.remote_decode, request.handoff)
        if request.handoff is not None:
            self._tracker.add_blocks_pulled(request.handoff.num_blocks)
        finished = False
        first_token = -1
        self._live.add(request.request_id)
        try:
            async for out in self._llm.generate(prompt, params, request.request_id, lora_request=lora):
                completion = out.outputs[0]
                tokens = tuple(int(t) for t in completion.token_ids)
                if tokens and first_token < 0:
                    first_token = tokens[0]
                cached = int(out.num_cached_tokens or 0)
                handoff = None
                if out.finished and request.remote_decode and out.kv_transfer_params:
                    handoff = handoff_from_vllm(
                        out.kv_transfer_params,
                        first_token=first_token,
                        num_cached_tokens=cached,
                        prompt_tokens=len(request.prompt_token_ids),
                        lease_deadline=time.time() + self._lease_s,
                    )
                    self._held_until = max(self._held_until, handoff.lease_deadline)
                finished = bool(out.finished)
                if finished and completion.finish_reason == "error" and request.handoff is not None and first_token < 0:
                    raise HandoffVoid("load_failed", f"vLLM could not load the KV of {request.request_id!r} "
                                      f"from engine {request.handoff.engine_id!r}")
                yield TokenDelta(
                    token_ids=tokens,
                    finished=finished,
                    finish_reason=_finish_reason(completion) if finished else None,
                    num_cached_tokens=cached,
                    logprobs=_logprobs(tokens, completion.logprobs, request.sampling.logprobs),
                    handoff=handoff,
                )
        finally:
            try:
                if not finished:
                    # The consumer went away (client disconnect, timeout): free the engine's work now,
                    # even if the task closing this generator is itself being cancelled.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self._llm.abort(request.request_id))
            finally:
                self._live.discard(request.request_id)

    def _check_lease(self, handoff: KVHandoff) -> None:
        """Refuse a handoff whose lease may run out before this engine's connector first renews it.

        vLLM's decode side renews the leases of the requests it has taken (a heartbeat at most every
        ``lease / 6`` s, each extending the lease), but nothing renews a lease while the handoff is on
        its way here; a pull past the deadline could read blocks the prefill worker has already reused.
        Raises ``HandoffVoid("lease_expired")`` when less than a heartbeat interval and a second is left.
        """
        if not handoff.lease_deadline:
            return
        left = handoff.lease_deadline - time.time()
        if left < self._lease_s / 6 + 1.0:
            raise HandoffVoid("lease_expired", f"the lease on {handoff.request_id!r} from engine "
                              f"{handoff.engine_id!r} has {left:.1f}s left, too little to pull safely")

    async def abort(self, request_id: str) -> None:
        if self._llm is not None:
            await self._llm.abort(request_id)

    def load(self) -> EngineLoad:
        held = time.time() < self._held_until
        return self._tracker.snapshot(live_requests=len(self._live), holds_handoffs=held)

    async def kv_events(self) -> AsyncIterator[KvEventBatch]:
        if self._subscriber is None:
            raise RuntimeError("engine not started")
        async for batch in self._subscriber.batches():
            yield batch

    async def shutdown(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await asyncio.to_thread(llm.shutdown)
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None
