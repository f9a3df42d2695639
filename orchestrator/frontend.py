"""What the HTTP front end may ask of the running service, and nothing more.

The routes (``orchestrator.api``) hold one ``Frontend`` and never reach into the services' pools,
routers or configs. It offers:

- ``models`` / ``model(name)``: the served models (``ModelCard``: name and context length), and one of
  them as a ``ServedModel`` (``KeyError`` for a name not served). A ``ServedModel`` has the request
  flow (``orchestrator.flow``): ``place`` (route + prefill), ``stream`` (the decode) and ``release``;
  they raise ``NoHealthyWorker`` or ``WorkerError`` (``orchestrator.errors``); cancelling ``place`` or
  closing ``stream`` early aborts the request on its worker; every placement must be ``release``d once
  its answer is done or abandoned (a no-op when its stream ran). ``record_outcome`` / ``observe_cached``
  count how a request ended (``pdserve_requests_total`` by model, endpoint and outcome) and the cached
  prompt tokens the engine reported;
- ``request_timeout_s``: the deadline of one request's decode (``server.request_timeout_s``);
- ``limits``: the bounds on one HTTP request (``limits:``, ``LimitsConfig``);
- ``auth`` / ``admit``: API keys, tenants and admission limits (``orchestrator.auth``): who calls
  (``auth.authenticate``), and whether a request may start now (a ``Ticket`` to release, or ``Refused``);
- ``health``: a ``DeploymentHealth`` (ok / degraded / unavailable, and each model's ``HealthReport``
  with every worker of each pool);
- ``metrics_text``: the Prometheus exposition, with the per-worker load gauges refreshed;
- ``workers`` / ``scale`` / ``drain``: the registry of workers and the admin's changes to it
  (``orchestrator.membership``; they raise ``MembershipError``).

``FlowRequest`` and ``Placement`` are re-exported: they are the records ``place`` and ``stream`` take;
``LimitsConfig`` is, for the routes' checks.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from orchestrator.auth import Caller, Gate, Refused, Ticket
from orchestrator.config import LimitsConfig
from orchestrator.membership.controller import Membership, MembershipError, ScaleOrder
from orchestrator.membership.registry import MemberView
from orchestrator.placement import FlowRequest, Placement
from orchestrator.pools.pool import WorkerHandle
from orchestrator.service import Service
from protocol.types import TokenChunk

__all__ = ["Caller", "DeploymentHealth", "FlowRequest", "Frontend", "HealthReport", "LimitsConfig", "MemberView",
           "MembershipError", "ModelCard", "Outcome", "Placement", "Refused", "ScaleOrder", "ServedModel", "Ticket",
           "WorkerHealth", "summarize_health"]

# A request's outcome, the ``status`` label of ``pdserve_requests_total``: the HTTP status it got, or
# ``client_gone`` when the client left first. A stream that fails after its 200 headers counts as 502.
Outcome = Literal["200", "400", "502", "503", "504", "client_gone"]
HealthStatus = Literal["ok", "degraded", "unavailable"]


@dataclass(frozen=True)
class ModelCard:
    """A served model: its name and the context length every worker of its pools accepts. ``parent``: for
    a LoRA adapter, the model whose pools serve it (None for a model)."""

    name: str
    max_model_len: int
    parent: str | None = None


@dataclass(frozen=True)
class WorkerHealth:
    """``healthy``: the worker answers; ``draining``: it takes no new requests (its own still finish)."""

    worker_id: str
    healthy: bool
    draining: bool = False


@dataclass(frozen=True)
class HealthReport:
    """``ok``: every worker answers. ``degraded``: requests are served, but some worker does not answer
    (fewer workers than configured, or no prefill worker, so decode workers prefill locally).
    ``unavailable``: nothing can be served (no decode worker answers, or no prefill worker and local
    prefill is off). ``prefill`` is empty for a colocated deployment."""

    status: HealthStatus
    prefill: tuple[WorkerHealth, ...]
    decode: tuple[WorkerHealth, ...]

    @property
    def serving(self) -> bool:
        return self.status != "unavailable"

    def counts(self) -> dict[str, dict[str, int]]:
        """Healthy and total workers of each pool (``prefill`` absent when colocated)."""
        pools = {"prefill": self.prefill, "decode": self.decode} if self.prefill else {"decode": self.decode}
        return {name: {"healthy": sum(w.healthy for w in workers), "total": len(workers)}
                for name, workers in pools.items()}


def summarize_health(prefill: Iterable[WorkerHealth] | None, decode: Iterable[WorkerHealth],
                     local_fallback: bool) -> HealthReport:
    """The report for these workers. ``prefill`` is None for a colocated deployment (no prefill pool);
    ``local_fallback``: decode workers prefill locally when no prefill worker can take a request."""
    prefill_workers = tuple(prefill or ())
    decode_workers = tuple(decode)
    decode_ok = any(w.healthy and not w.draining for w in decode_workers)
    prefill_ok = prefill is None or any(w.healthy and not w.draining for w in prefill_workers)
    status: HealthStatus
    if not decode_ok or not (prefill_ok or local_fallback):
        status = "unavailable"
    else:
        status = "ok" if all(w.healthy for w in prefill_workers + decode_workers) else "degraded"
    return HealthReport(status, prefill_workers, decode_workers)


@dataclass(frozen=True)
class DeploymentHealth:
    """Every served model's ``HealthReport``, by name, and the deployment's status: ``ok`` when every
    model's is, ``unavailable`` when no model can serve, else ``degraded``."""

    status: HealthStatus
    models: dict[str, HealthReport]

    @classmethod
    def of(cls, reports: dict[str, HealthReport]) -> DeploymentHealth:
        statuses = {r.status for r in reports.values()}
        status: HealthStatus = ("ok" if statuses == {"ok"} else
                                "unavailable" if statuses == {"unavailable"} else "degraded")
        return cls(status, reports)

    @property
    def serving(self) -> bool:
        return self.status != "unavailable"


def _health_of(handles: Iterable[WorkerHandle]) -> tuple[WorkerHealth, ...]:
    return tuple(WorkerHealth(h.worker_id, h.healthy, h.draining) for h in handles)


class ServedModel:
    """One served model as the routes see it: its card and its request flow. Reads its service only."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._flow = service.flow
        self._metrics = service.metrics
        self.card = ModelCard(service.config.model.name, service.facts.max_model_len)
        self.adapters = tuple(ModelCard(a.name, service.facts.max_model_len, parent=self.card.name)
                              for a in service.config.model.adapters)
        self.request_timeout_s: float = service.config.server.request_timeout_s

    @property
    def name(self) -> str:
        return self.card.name

    async def place(self, req: FlowRequest) -> Placement:
        """Route and prefill ``req``; where its decode runs. Raises ``NoHealthyWorker`` or ``WorkerError``."""
        return await self._flow.place(req)

    def stream(self, req: FlowRequest, placement: Placement) -> AsyncGenerator[TokenChunk, None]:
        """The decode's chunks, up to the finished one; raises ``WorkerError`` on a failed or silent worker.
        Closing it before the finished chunk aborts the request on the decode worker."""
        return self._flow.stream(req, placement)

    async def release(self, req: FlowRequest, placement: Placement) -> None:
        """End a placement whose stream never started (the client left first): its decode seat and its
        handoff are freed. Idempotent, and a no-op once ``stream`` ran (which ends the placement itself)."""
        await self._flow.release(req, placement)

    def record_outcome(self, endpoint: str, outcome: Outcome) -> None:
        """Count one request of ``endpoint`` (``chat_completions`` or ``completions``) as ended with ``outcome``."""
        self._metrics.requests.labels(endpoint, outcome).inc()

    def observe_cached(self, tokens: int) -> None:
        """The engine reported ``tokens`` cached prompt tokens for a finished or abandoned request."""
        self._flow.observe_cached(tokens)

    def health(self) -> HealthReport:
        service = self._service
        # A prefill pool scaled to nothing is no prefill pool: decode workers prefill locally.
        prefill = _health_of(service.prefill) if service.prefill is not None and len(service.prefill) else None
        return summarize_health(prefill, _health_of(service.decode),
                                service.config.disaggregation.local_when_prefill_saturated)


class Frontend:
    """The served models as the HTTP routes see them, and what they share: the admission gate (keys,
    limits; its only state of its own), the limits, the health and metrics of the whole deployment and
    the worker registry. ``models`` pairs each model's service with its membership (None: a registry of
    the workers its pools hold, which cannot launch more); every service writes one ``MetricFamilies``
    and the shared sections of their configs (server, auth, limits) are the first's."""

    def __init__(self, models: Sequence[tuple[Service, Membership | None]]) -> None:
        if not models:
            raise ValueError("a front end serves at least one model")
        first = models[0][0]
        self._served = {service.config.model.name: ServedModel(service) for service, _ in models}
        self._by_adapter = {card.name: (served, card) for served in self._served.values() for card in served.adapters}
        self._services = [service for service, _ in models]
        self._memberships = {service.config.model.name: membership or Membership(service, None)
                             for service, membership in models}
        self._families = first.metrics.families
        self.request_timeout_s: float = first.config.server.request_timeout_s
        self.auth = Gate(first.config.auth, first.config.server.max_in_flight)
        self.limits: LimitsConfig = first.config.limits

    @property
    def models(self) -> tuple[ModelCard, ...]:
        """Every served model, in config order, each followed by its LoRA adapters."""
        return tuple(card for served in self._served.values() for card in (served.card, *served.adapters))

    def model(self, name: str) -> tuple[ServedModel, ModelCard]:
        """The served model a request naming ``name`` runs on, and the card of what it named: the model's
        own, or its LoRA adapter's (``parent`` set); ``KeyError`` when nothing served is called ``name``."""
        if name in self._served:
            return self._served[name], self._served[name].card
        return self._by_adapter[name]

    def admit(self, caller: Caller | None) -> Ticket:
        """Admit one request of ``caller`` or raise ``Refused`` (counted by reason and tenant)."""
        try:
            return self.auth.admit(caller)
        except Refused as exc:
            self._families.refused.labels(exc.reason, caller.tenant if caller else "").inc()
            raise

    def health(self) -> DeploymentHealth:
        """Every model's report; the deployment's status is ``ok`` when every model's is, ``unavailable``
        when no model can serve, else ``degraded``."""
        return DeploymentHealth.of({name: served.health() for name, served in self._served.items()})

    def metrics_text(self) -> bytes:
        """Prometheus text exposition of every model's metrics, load gauges refreshed first."""
        for service in self._services:
            service.update_load_gauges()
        for membership in self._memberships.values():
            membership.update_gauges()
        return self._families.exposition()

    def workers(self) -> list[MemberView]:
        """Every worker the server knows of, with its model, node, addresses and state."""
        return [view for membership in self._memberships.values() for view in membership.views()]

    def scale(self, pool: str, replicas: int, model: str | None = None) -> ScaleOrder:
        """Grow or shrink ``model``'s ``pool`` (``model`` may be left out when one model is served);
        returns at once with the workers being added or drained. Raises ``MembershipError``."""
        return self._membership_of(model).scale(pool, replicas)

    def drain(self, worker_id: str) -> MemberView:
        """Stop placing requests on ``worker_id`` and retire it once its in-flight work is done."""
        for membership in self._memberships.values():
            if membership.knows(worker_id):
                return membership.drain(worker_id)
        raise MembershipError(f"no worker {worker_id!r}", 404)

    def _membership_of(self, model: str | None) -> Membership:
        if model is None:
            if len(self._memberships) > 1:
                raise MembershipError(f"this server serves several models ({', '.join(self._memberships)}): "
                                      "name the pool's model", 400)
            return next(iter(self._memberships.values()))
        if model not in self._memberships:
            raise MembershipError(f"no model {model!r} (served: {', '.join(self._memberships)})", 404)
        return self._memberships[model]
