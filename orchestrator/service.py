"""The running orchestrator: worker pools, router, prefix index and monitors, built from started
workers. Owns the clients and background tasks it creates; ``close`` releases them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from orchestrator.config import PdserveConfig
from orchestrator.flow import RequestFlow
from orchestrator.launch.process import WorkerEndpoint
from orchestrator.metrics import Metrics
from orchestrator.pools.client import WorkerClient
from orchestrator.pools.compat import check_compatible
from orchestrator.pools.pool import PoolMonitor, WorkerHandle, WorkerPool
from orchestrator.scheduler.approx_index import ApproxPrefixIndex
from orchestrator.scheduler.link_meter import MeasuredLinks
from orchestrator.scheduler.links import DEFAULT_SAME_HOST_BYTES_PER_S, LinkTable
from orchestrator.scheduler.plugin import PluginEnv
from orchestrator.scheduler.prefix_index import PrefixIndex
from orchestrator.scheduler.profiles import build_pipeline
from orchestrator.scheduler.router import Router
from protocol.engine_args import SimArgs
from protocol.types import KvEventBatch

log = logging.getLogger(__name__)

_COUNTED = ("kv_blocks_pulled", "kv_bytes_pulled", "kv_pulls", "kv_pull_seconds", "kv_leases_expired",
            "kv_reads_after_expiry", "kv_pull_failures")  # EngineLoad counters shown as they are
_LOAD_FIGURES = ("running", "waiting", "kv_usage", "in_flight", "prefill_tokens_per_s", *_COUNTED)


@dataclass(frozen=True)
class ModelFacts:
    """What every worker of the deployment agrees on (checked at start)."""

    block_size: int
    max_model_len: int
    kv_bytes_per_token: int


async def open_worker(endpoint: WorkerEndpoint) -> WorkerHandle:
    """A handle on a started worker: client opened, description read and checked (``IncompatibleWorker``
    for another wire version, ``WorkerError`` when it does not answer; the client is closed on failure)."""
    client = WorkerClient(endpoint.worker_id, endpoint.address)
    try:
        description = check_compatible(await client.info(timeout_s=30))
    except BaseException:
        await client.close()
        raise
    return WorkerHandle(client=client, description=description)


DEFAULT_VLLM_LINK_BYTES_PER_S = 10e9 / 8  # the prior between hosts when nothing says better: 10 Gb/s


def link_priors(config: PdserveConfig) -> LinkTable:
    """The link table before any handoff is measured: between hosts ``transfer.link_bandwidth_gbps``, else
    the simulated decode engines' own link (their profile's), else 10 Gb/s; within a host a shared-memory
    copy, never taken as slower than the network."""
    cross = config.transfer.link_bandwidth_bytes_per_s
    if cross is None:
        args = config.engine_args_for(config.decode)
        cross = args.resolve().link_bandwidth_bytes_per_s if isinstance(args, SimArgs) \
            else DEFAULT_VLLM_LINK_BYTES_PER_S
    return LinkTable(same_host_bytes_per_s=max(DEFAULT_SAME_HOST_BYTES_PER_S, cross), cross_host_bytes_per_s=cross)


class Service:
    """The pools, router, index and their monitors. Membership changes go through ``join``, ``rejoin``
    and ``leave`` (``orchestrator.membership``), on the event loop."""

    def __init__(self, config: PdserveConfig, prefill: WorkerPool | None, decode: WorkerPool,
                 facts: ModelFacts, metrics: Metrics) -> None:
        self.config = config
        self.prefill = prefill
        self.decode = decode
        self.facts = facts
        self.metrics = metrics
        priors = link_priors(config)
        self.links = MeasuredLinks(priors)
        env = PluginEnv(seed=config.prefill.routing.seed, links=priors)
        self.index: PrefixIndex | ApproxPrefixIndex
        if config.index.mode == "events":
            self.index = PrefixIndex(config.model.name, facts.block_size)
        else:
            self.index = ApproxPrefixIndex(config.index.approx_capacity_blocks, config.index.approx_ttl_s)
        # Colocated: the decode pool's profile places whole requests, prefix-aware.
        prefill_profile = (config.decode if config.colocated else config.prefill).routing.resolve()
        decode_profile = config.decode.routing.resolve()
        self.router = Router(model=config.model.name, block_size=facts.block_size, index=self.index,
                             prefill=build_pipeline(prefill_profile, env), decode=build_pipeline(decode_profile, env),
                             disagg=config.disaggregation)
        self.flow = RequestFlow(router=self.router, prefill=prefill, decode=decode, metrics=metrics,
                                server=config.server, prefill_policy=prefill_profile.name,
                                decode_policy=decode_profile.name, kv_bytes_per_token=facts.kv_bytes_per_token,
                                on_pull_failure=config.transfer.on_pull_failure, links=self.links,
                                lead_token=config.disaggregation.first_token == "prefill")
        self._monitors: dict[str, PoolMonitor] = {}

    @classmethod
    async def connect(cls, config: PdserveConfig, endpoints: list[WorkerEndpoint],
                      metrics: Metrics | None = None) -> Service:
        """Open clients to started workers (this model's), read their facts, and build the service.
        ``metrics``: this model's view of the deployment's metric families (new ones when None)."""
        handles = [await open_worker(endpoint) for endpoint in endpoints]
        block_sizes = {h.description.engine.block_size for h in handles}
        if len(block_sizes) != 1:
            raise RuntimeError(f"workers disagree on block size: {sorted(block_sizes)}")
        first = handles[0].description.engine
        facts = ModelFacts(block_size=first.block_size,
                           max_model_len=min(h.description.engine.max_model_len for h in handles),
                           kv_bytes_per_token=first.kv_bytes_per_token)
        # A disaggregated deployment always has a prefill pool (maybe empty, until it is scaled up).
        prefill = None if config.colocated else WorkerPool(
            "prefill", [h for h in handles if h.description.role == "prefill"], config.prefill.queue_bound)
        decode = WorkerPool("decode", [h for h in handles if h.description.role != "prefill"],
                            config.decode.queue_bound)
        service = cls(config, prefill, decode, facts, metrics or Metrics(config.model.name))
        service.start_monitors()
        return service

    def pool(self, name: str) -> WorkerPool:
        """The pool called ``name`` (``prefill`` or ``decode``); ``KeyError`` if this deployment has none."""
        pool = self.prefill if name == "prefill" else self.decode if name == "decode" else None
        if pool is None:
            raise KeyError(name)
        return pool

    async def join(self, endpoint: WorkerEndpoint, pool: str) -> WorkerHandle:
        """Admit a started worker into ``pool``: its client opened, its facts checked against the
        deployment's, its load polled and its events followed. Raises ``RuntimeError`` for a worker
        that disagrees on the model's facts (its client closed)."""
        handle = await open_worker(endpoint)
        self._check_facts(handle)
        self.pool(pool).add(handle)
        self._monitors[pool].watch(handle)
        return handle

    async def rejoin(self, endpoint: WorkerEndpoint, pool: str) -> None:
        """A restarted worker is back at ``endpoint``: its handle gets the new client; what the index knew
        of its old cache is dropped (its events rebuild it)."""
        handle = await open_worker(endpoint)
        self._check_facts(handle)
        old = self.pool(pool).rebind(endpoint.worker_id, handle.client, handle.description)
        self.forget(endpoint.worker_id)
        await old.close()

    async def leave(self, worker_id: str, pool: str) -> None:
        """Take a worker out of ``pool`` for good: no more polls, events or index entries; client closed."""
        handle = self.pool(pool).remove(worker_id)
        await self._monitors[pool].unwatch(worker_id)
        self.forget(worker_id)
        await handle.client.close()
        for figure in _LOAD_FIGURES:
            with contextlib.suppress(KeyError):
                self.metrics.worker_load.remove(worker_id, figure)
        with contextlib.suppress(KeyError):
            self.metrics.worker_healthy.remove(worker_id)

    def _check_facts(self, handle: WorkerHandle) -> None:
        engine = handle.description.engine
        if (engine.block_size, engine.kv_bytes_per_token) != (self.facts.block_size, self.facts.kv_bytes_per_token):
            asyncio.get_running_loop().create_task(handle.client.close())
            raise RuntimeError(f"worker {handle.worker_id} has block size {engine.block_size} and "
                               f"{engine.kv_bytes_per_token} KV bytes per token; the deployment has "
                               f"{self.facts.block_size} and {self.facts.kv_bytes_per_token}")

    def _on_events(self, worker_id: str, batch: KvEventBatch) -> None:
        if not isinstance(self.index, PrefixIndex):
            return
        try:
            result = self.index.apply(worker_id, batch)
        except ValueError:
            # A batch the index cannot apply: forget this worker; its next events rebuild it.
            log.exception("dropping %s from the prefix index after a bad KV event batch", worker_id)
            self.index.remove_worker(worker_id)
            self.metrics.index_resyncs.inc()
            return
        if result.resynced:
            self.metrics.index_resyncs.inc()
        self.metrics.index_blocks.set(self.index.size)

    def forget(self, worker_id: str) -> None:
        """Drop what the prefix index knows of ``worker_id``'s cache (it died, restarted or left)."""
        if isinstance(self.index, PrefixIndex):
            self.index.remove_worker(worker_id)

    def start_monitors(self) -> None:
        """Poll both pools and index both pools' KV events: decode workers' caches matter too, to a
        local prefill and to a colocated pool."""
        interval = self.config.server.load_poll_interval_s
        if self.prefill is not None:
            self._monitors["prefill"] = PoolMonitor(self.prefill, interval, self._on_events, self.forget)
        self._monitors["decode"] = PoolMonitor(self.decode, interval, self._on_events, self.forget)
        for monitor in self._monitors.values():
            monitor.start()

    def update_load_gauges(self) -> None:
        for pool in (self.prefill, self.decode):
            if pool is None:
                continue
            for h in pool:
                g = self.metrics.worker_load
                self.metrics.worker_healthy.labels(h.worker_id).set(1 if h.healthy else 0)
                if not h.healthy:  # a dead worker's last figures are not its load: drop them
                    for figure in _LOAD_FIGURES:
                        with contextlib.suppress(KeyError):
                            g.remove(h.worker_id, figure)
                    continue
                g.labels(h.worker_id, "running").set(h.load.running)
                g.labels(h.worker_id, "waiting").set(h.load.waiting)
                g.labels(h.worker_id, "kv_usage").set(h.load.kv_usage)
                g.labels(h.worker_id, "in_flight").set(h.in_flight)
                if h.prefill_speed.samples:
                    g.labels(h.worker_id, "prefill_tokens_per_s").set(h.prefill_speed.tokens_per_s)
                for figure in _COUNTED:
                    g.labels(h.worker_id, figure).set(getattr(h.load, figure))

    async def close(self) -> None:
        for monitor in self._monitors.values():
            await monitor.stop()
        await self.flow.close()
        clients = [h.client for pool in (self.prefill, self.decode) if pool is not None for h in pool]
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
