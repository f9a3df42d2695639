"""Typed messages that cross the orchestrator/worker boundary (converted to and from protobuf in
``protocol.convert``). Frozen dataclasses; never ``dict[str, Any]``. Imports nothing else from the repo.

One message per RPC direction: ``PrefillCall`` -> ``KVHandoff`` (Prefill), ``GenerateCall`` -> a stream
of ``TokenChunk`` (Generate), ``WorkerDescription`` (GetInfo), ``WorkerLoad`` (GetLoad), ``KvEventBatch``
(StreamKvEvents). ``WIRE_VERSION`` names this set; the orchestrator refuses a worker speaking another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WIRE_VERSION = 6
"""Version of the orchestrator/worker messages. Bump it whenever a field or status changes meaning,
appears or goes away in ``worker.proto``; a worker reporting another version is refused at registration.
(1 was the unversioned protocol: workers that predate the field report 0; 3 added the ABORTED Generate
of a void handoff and vLLM's penalties, ``top_k``, ``min_tokens`` and ``logit_bias`` to ``Sampling``;
4 added ``kv_pull`` to the Generate stream's chunks; 5 added ``lora``, the LoRA adapter, to Prefill and
Generate calls and to stored-block events; 6 added ``first_token_stops`` to the handoff and
``answer_prefix`` to Generate calls.)"""

VOID_REASON_KEY = "pdserve-void-reason"
"""Trailing metadata of a Generate the worker ended with ABORTED because its KV handoff could not be read:
the reason (``lease_expired``, ``source_gone`` or ``load_failed``)."""


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling parameters the worker hands to its engine. ``temperature == 0`` means greedy; ``top_k``
    0 means off. The penalties, ``logit_bias`` (token id, bias) pairs and ``min_tokens`` follow vLLM's
    ``SamplingParams``; the defaults change nothing. An engine that does not model a field refuses a
    request that sets it (``ValueError``)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    top_k: int = 0
    min_tokens: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None  # None: none; n: each token's logprob and the n most likely alternatives
    json_object: bool = False  # the answer is a JSON object
    json_schema: str | None = None  # the answer follows this JSON schema (JSON text)

    def shaping(self) -> dict[str, object]:
        """The fields that reshape the token distribution and are set away from their defaults."""
        fields = {"top_k": (self.top_k, 0), "min_tokens": (self.min_tokens, 0),
                  "presence_penalty": (self.presence_penalty, 0.0),
                  "frequency_penalty": (self.frequency_penalty, 0.0),
                  "repetition_penalty": (self.repetition_penalty, 1.0), "logit_bias": (self.logit_bias, ()),
                  "json_object": (self.json_object, False), "json_schema": (self.json_schema, None)}
        return {name: value for name, (value, default) in fields.items() if value != default}


@dataclass(frozen=True)
class EngineLoad:
    """A snapshot of an engine's load, from its scheduler statistics. ``kv_usage`` is in [0, 1]."""

    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    kv_blocks_pulled: int = 0
    kv_bytes_pulled: int = 0
    kv_pull_seconds: float = 0.0
    kv_pulls: int = 0
    kv_leases_expired: int = 0  # handoffs this (prefill) engine freed at lease expiry, never read
    kv_reads_after_expiry: int = 0  # reads of handoffs whose lease had expired (vLLM's prefill side)
    kv_pull_failures: int = 0  # failed KV transfers (vLLM)


@dataclass(frozen=True)
class EngineInfo:
    """Static facts about an engine, fixed once it has started."""

    engine_id: str
    model: str
    block_size: int
    num_blocks: int
    max_model_len: int
    kv_bytes_per_token: int


@dataclass(frozen=True)
class BlockStored:
    """Blocks an engine added to its prefix cache, in vLLM's shape: chained engine hashes (opaque),
    the parent block's engine hash, and the token ids of all stored blocks in order. ``cache_salt`` is
    the tenant salt of the request's first block, set only when ``parent_block_hash`` is None. ``lora``:
    the name of the LoRA adapter the blocks were computed with (None: the base model)."""

    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int
    cache_salt: str | None = None
    lora: str | None = None


@dataclass(frozen=True)
class BlockRemoved:
    """Blocks an engine evicted, named by their engine hashes."""

    block_hashes: tuple[int, ...]


@dataclass(frozen=True)
class AllBlocksCleared:
    """The engine dropped its whole prefix cache."""


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True)
class KvEventBatch:
    """Events published together. ``seq`` increases by one per batch per engine; a gap means the
    receiver missed events and must resync (drop what it knows of this worker)."""

    seq: int
    timestamp: float
    events: tuple[KvEvent, ...]


@dataclass(frozen=True)
class KVHandoff:
    """Where a prompt's KV blocks live on the prefill side, and how much of the prompt they cover.

    vLLM's ``kv_transfer_params`` as a wire record (translated to and from vLLM's dict only in
    ``transfer.handoff``). ``engine_id``/``host``/``port`` name the prefill engine's NIXL side channel;
    ``block_ids`` are the prefill engine's block ids holding the prompt's KV, one tuple per KV-cache
    group (vLLM's layout); ``request_id`` is the prefill engine's id for the request; ``tp_size`` its
    tensor-parallel size. ``first_token`` is the token the prefill sampled (-1: unknown) and
    ``first_token_stops`` whether that token ended the answer (an end-of-sequence or stop token id);
    ``num_cached_tokens`` how many prompt tokens were already in the prefill worker's prefix cache;
    ``prompt_tokens`` the prompt length. ``lease_deadline`` is the wall-clock time (seconds since the
    epoch) after which the prefill worker frees the blocks. ``extra`` keeps connector fields pdserve does
    not interpret, as (key, JSON text) pairs sorted by key, so a newer vLLM adding a field round-trips
    unchanged.
    """

    engine_id: str
    block_ids: tuple[tuple[int, ...], ...]
    host: str
    port: int
    tp_size: int = 1
    request_id: str = ""
    first_token: int = -1
    num_cached_tokens: int = 0
    prompt_tokens: int = 0
    lease_deadline: float = 0.0
    first_token_stops: bool = False
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def num_blocks(self) -> int:
        """Blocks held for the prompt, over all KV-cache groups."""
        return sum(len(group) for group in self.block_ids)


@dataclass(frozen=True)
class PrefillCall:
    """Prefill RPC request: run ``prompt_token_ids`` for a remote decode and keep its KV blocks.

    The worker generates one token (whatever ``sampling.max_tokens`` says) and answers with the
    ``KVHandoff`` of the held blocks. ``request_id`` is the worker-side id (unique per call; ``Abort``
    names it). ``cache_salt`` isolates tenants in the prefix cache; None (sent as "") means no salt.
    ``lora``: the name of one of the worker's LoRA adapters to run the prompt with (None: the base model).
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingSpec
    cache_salt: str | None = None
    lora: str | None = None


@dataclass(frozen=True)
class GenerateCall:
    """Generate RPC request: decode ``prompt_token_ids``, streaming ``TokenChunk``s.

    With a ``handoff`` the worker pulls the prompt's KV from that prefill worker; without one it prefills
    locally (short prompt, saturated prefill pool, colocated worker). ``answer_prefix``: how many of the
    prompt's last tokens are the answer's own, already sent to the client (1 when the prefill's first token
    opened the answer: ``orchestrator.lead_token``); the worker continues the answer after them, and a
    handoff's blocks cover the prompt without them. Other fields as in ``PrefillCall``.
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingSpec
    cache_salt: str | None = None
    handoff: KVHandoff | None = None
    lora: str | None = None
    answer_prefix: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one generated token, and the most likely tokens at its position as
    (token id, logprob) pairs, most likely first (as many as the request asked for)."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class KvPull:
    """What one Generate's KV pull cost, as the decode worker measured it: ``bytes`` moved from the prefill
    worker and ``seconds`` from the pull's start (it was asked for) to its end, waits behind other pulls
    on the same link included. ``bytes`` may be 0 (every block was in the decode worker's own cache)."""

    bytes: int
    seconds: float


@dataclass(frozen=True)
class TokenChunk:
    """New tokens of one request since its previous chunk (one Generate stream message).

    ``num_cached_tokens`` (prompt tokens served from the prefix cache or pulled from a remote prefill) is
    set on every chunk once known. ``finish_reason`` is ``"stop"``, ``"length"`` or ``"abort"`` on the last
    chunk (``finished``) and None before. A stream that ends without a finished chunk failed.
    ``kv_pull``: on a Generate with a handoff, the pull's figures, on the first chunk after it ended (the
    one with the first token) and on no other; None when the engine cannot attribute a pull to the request
    (see each adapter) or there was no handoff.
    """

    token_ids: tuple[int, ...]
    finished: bool = False
    finish_reason: str | None = None
    num_cached_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token id when the request asked; else empty
    kv_pull: KvPull | None = None


@dataclass(frozen=True)
class WorkerDescription:
    """What a worker says about itself (GetInfo). ``role`` is a registered role name (``prefill``,
    ``decode``, ``both``); ``wire_version`` the ``WIRE_VERSION`` the worker was built with."""

    worker_id: str
    role: str
    host: str
    engine_kind: str
    engine: EngineInfo
    wire_version: int = WIRE_VERSION


@dataclass(frozen=True)
class WorkerLoad:
    """A worker's load (GetLoad): its engine's figures plus the worker's own count of requests in flight
    (Prefill and Generate calls it is serving)."""

    engine: EngineLoad
    in_flight: int
