"""In-process pdserve front end for integration tests: the real Service, FastAPI app and uvicorn server on
127.0.0.1:0, running on an event loop in a background thread, so tests drive it with synchronous
clients (the official ``openai`` client, httpx). Also a stub gRPC worker whose behaviour a test picks
(answer, stall, fail mid-stream) and which counts the Abort calls it receives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import uvicorn

from orchestrator.api.app import create_app
from orchestrator.api.text import Tokenizer
from orchestrator.config import PdserveConfig, parse_config
from orchestrator.deployment import Deployment
from orchestrator.frontend import Frontend
from orchestrator.launch.launchers import Launcher
from orchestrator.launch.plan import ProcessPlan
from orchestrator.launch.process import WorkerEndpoint
from orchestrator.membership.controller import Membership
from orchestrator.service import Service
from orchestrator.serving import close_models, open_models
from protocol import convert
from protocol import worker_pb2 as pb
from protocol import worker_pb2_grpc as pb_grpc
from protocol.types import (
    WIRE_VERSION,
    EngineInfo,
    EngineLoad,
    KvEventBatch,
    KVHandoff,
    TokenChunk,
    WorkerDescription,
    WorkerLoad,
)

T = TypeVar("T")
SIM_VOCAB = 49152  # the tiny model's tokenizer vocabulary, so simulated tokens detokenize
MODEL_NAME = "sim-tiny"


def sim_config(model_dir: Path, *, prefill: int = 2, decode: int = 2, engine_args: dict[str, Any] | None = None,
               transfer: dict[str, Any] | None = None, process_per_worker: bool = False,
               topology: dict[str, Any] | None = None, decode_profile: str = "decode",
               first_token: str = "prefill", **server: Any) -> PdserveConfig:
    """A simulated deployment on the ``tiny-fast`` profile (4-token blocks), fast health polling.
    ``engine_args``: sim profile fields (or ``profile``) laid over the harness's; validated with the config.
    ``transfer``: the config's ``transfer`` section. Each pool's workers share one process unless
    ``process_per_worker`` (so that one can be killed alone). ``topology``: the engine's hosts and racks
    (``engine.topology``); ``decode_profile``: the decode pool's routing preset; ``first_token``: the
    disaggregation policy's."""
    args = {"profile": "tiny-fast", "vocab_size": SIM_VOCAB, "eos_token_id": 2, "num_blocks": 1024,
            "max_model_len": 1024, "speedup": 20.0, **(engine_args or {})}
    engine: dict[str, Any] = {"kind": "sim", "args": args}
    if topology is not None:
        engine["topology"] = topology
    return parse_config({
        "apiVersion": "pdserve/v1",
        "model": {"name": MODEL_NAME, "path": str(model_dir)},
        "engine": engine,
        "prefill": {"replicas": prefill, "workers_per_process": 1 if process_per_worker else max(1, prefill),
                    "routing": {"profile": "kv_aware"}},
        "decode": {"replicas": decode, "workers_per_process": 1 if process_per_worker else max(1, decode),
                   "routing": {"profile": decode_profile}},
        "disaggregation": {"min_remote_tokens": 0, "first_token": first_token},
        "transfer": transfer or {},
        "server": {"host": "127.0.0.1", "port": 0, "load_poll_interval_s": 0.1, **server},
    })


class LoopThread:
    """An asyncio loop running in a daemon thread; ``run`` executes a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pd-harness-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class FrontEnd:
    """A served pdserve front end. ``url`` is ``http://127.0.0.1:PORT``."""

    loop: LoopThread
    service: Service
    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str
    membership: Membership  # the first model's (``served`` has every model's service and membership)
    served: list[tuple[Service, Membership]] = field(default_factory=list)

    @classmethod
    def start(cls, loop: LoopThread, config: PdserveConfig | Deployment, endpoints: list[WorkerEndpoint],
              tokenizer: Tokenizer | Mapping[str, Tokenizer], launcher: Launcher | None = None,
              plans: list[ProcessPlan] | None = None, supervise_interval_s: float = 0.2) -> FrontEnd:
        """Serve ``endpoints``' workers: one model (a config and its tokenizer) or several (a deployment and
        a tokenizer per model name). With ``launcher`` (the one that started ``plans``), workers whose
        process dies are restarted and pools can be scaled and drained (``membership``)."""
        deployment = config if isinstance(config, Deployment) else Deployment((config,))
        tokenizers = dict(tokenizer) if isinstance(tokenizer, Mapping) else {deployment.shared.model.name: tokenizer}

        async def up() -> FrontEnd:
            served = await open_models(deployment, endpoints, launcher, run_id="itest", plans=plans or [],
                                       supervise_interval_s=supervise_interval_s)
            server = _QuietServer(uvicorn.Config(create_app(Frontend(served), tokenizers),
                                                 host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
            task = asyncio.create_task(server.serve())
            while not server.started:
                if task.done():
                    await close_models(served)
                    await task
                    raise RuntimeError("uvicorn stopped before serving")
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            service, membership = served[0]
            return cls(loop, service, server, task, f"http://127.0.0.1:{port}", membership, served)

        return loop.run(up())

    def stop(self) -> None:
        async def down() -> None:
            self.server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)
            await close_models(self.served)

        self.loop.run(down())

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the Prometheus text at /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return metric_value(text, name, **labels)

    def wait_until(self, predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return predicate()


def admin_workers(url: str) -> dict[str, dict[str, Any]]:
    """The server's worker registry (``GET /admin/workers``, no key), by worker id."""
    return {row["id"]: row for row in httpx.get(f"{url}/admin/workers", timeout=10).json()["data"]}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sample of ``name`` with exactly ``labels`` (0 when absent). Unless ``model`` is among
    ``labels``, samples are matched without their ``model`` label and summed over the models."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        if "{" in key:
            metric, rest = key.split("{", 1)
            pairs = [p for p in rest.rstrip("}").split(",") if p]
            if "model" not in labels:
                pairs = [p for p in pairs if not p.startswith("model=")]
            got = ",".join(sorted(pairs))
        else:
            metric, got = key, ""
        if metric == name and got == want:
            total, found = total + float(value), True
    return total if found else 0.0


def sse_events(lines: Iterator[str]) -> Iterator[Any]:
    """Parsed ``data:`` payloads of an SSE body; ``[DONE]`` is yielded as the string."""
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: "):]
            yield data if data == "[DONE]" else json.loads(data)


def assert_error(reply: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The reply has ``status`` and an OpenAI error body; returns its ``error`` object."""
    assert reply.status_code == status, (reply.status_code, reply.text)
    return assert_error_body(reply.json(), code)


def assert_error_body(body: Any, code: str | None = None) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


# -- a stub worker ------------------------------------------------------------------------------------

TOKENS = (19556, 905, 28, 451, 314, 260)  # "Hello world, this is the" in the tiny tokenizer


@dataclass
class StubWorker(pb_grpc.WorkerServicer):
    """A gRPC worker whose Prefill/Generate do what the test says.

    ``prefill``: ``"ok"`` (returns a handoff at once), ``"stall"`` (never answers) or ``"fail"`` (UNAVAILABLE).
    ``generate``: ``"ok"`` (``max_tokens`` tokens then finished), ``"stall"`` (never sends a token),
    ``"drip"`` (a token every ``drip_s`` forever), ``"fail"`` (``fail_after`` tokens then an INTERNAL error),
    ``"eof"`` (``fail_after`` tokens then the stream ends without finishing).
    Abort and Generate/Prefill calls are recorded by request id. ``wire_version`` is what GetInfo reports."""

    worker_id: str
    role: str
    prefill: str = "ok"
    generate: str = "ok"
    drip_s: float = 0.02
    fail_after: int = 2
    block_size: int = 4
    max_model_len: int = 1024
    wire_version: int = WIRE_VERSION
    aborts: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    with_handoff: list[bool] = field(default_factory=list)  # per Generate call: did it carry a KV handoff
    continued: list[bool] = field(default_factory=list)  # per Generate call: after the prefill's first token

    async def GetInfo(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.WorkerInfo:
        return convert.info_to_pb(WorkerDescription(
            worker_id=self.worker_id, role=self.role, host="127.0.0.1", engine_kind="stub",
            engine=EngineInfo(engine_id=self.worker_id, model=MODEL_NAME, block_size=self.block_size,
                              num_blocks=1024, max_model_len=self.max_model_len, kv_bytes_per_token=64),
            wire_version=self.wire_version))

    async def GetLoad(self, request: pb.LoadRequest, context: grpc.aio.ServicerContext) -> pb.LoadReport:
        return convert.load_to_pb(WorkerLoad(engine=EngineLoad(), in_flight=0))

    async def Prefill(self, request: pb.PrefillRequest, context: grpc.aio.ServicerContext) -> pb.PrefillResponse:
        call = convert.prefill_call_from_pb(request)
        self.calls.append(call.request_id)
        if self.prefill == "stall":
            await self._forever(call.request_id)
        if self.prefill == "fail":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "stub prefill engine is gone")
        handoff = KVHandoff(engine_id=self.worker_id, block_ids=((1, 2),), host="127.0.0.1", port=1,
                            request_id=call.request_id, first_token=TOKENS[0],
                            prompt_tokens=len(call.prompt_token_ids))
        return convert.prefill_response_to_pb(handoff)

    async def Generate(self, request: pb.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateChunk]:
        call = convert.generate_call_from_pb(request)
        self.calls.append(call.request_id)
        self.with_handoff.append(call.handoff is not None)
        max_tokens = call.sampling.max_tokens
        # A call continuing after answer tokens it carries (the prefill's first token) answers on from
        # there; ``fail_after`` counts the whole answer's tokens.
        start = call.answer_prefix
        self.continued.append(bool(start))
        try:
            if self.generate == "stall":
                await self._forever(call.request_id)
            for i in range(start, start + max_tokens if self.generate == "ok" else 1 << 30):
                if self.generate in ("fail", "eof") and i == self.fail_after:
                    if self.generate == "fail":
                        await context.abort(grpc.StatusCode.INTERNAL, "stub engine crashed")
                    return
                if self.generate == "drip":
                    await asyncio.sleep(self.drip_s)
                done = self.generate == "ok" and i == start + max_tokens - 1
                yield convert.token_chunk_to_pb(TokenChunk(token_ids=(TOKENS[i % len(TOKENS)],), finished=done,
                                                           finish_reason="length" if done else None))
        except (asyncio.CancelledError, GeneratorExit):
            # A cancelled call reaches a generator paused at ``yield`` as GeneratorExit (grpc closes it),
            # and one paused in a sleep as CancelledError: either way the stream ended unfinished.
            self.cancelled.append(call.request_id)
            raise

    async def Abort(self, request: pb.AbortRequest, context: grpc.aio.ServicerContext) -> pb.AbortResponse:
        self.aborts.append(convert.abort_request_from_pb(request))
        return convert.abort_response_to_pb(True)

    async def StreamKvEvents(self, request: pb.EventsRequest,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.KvEventBatch]:
        await asyncio.Event().wait()
        yield convert.events_to_pb(KvEventBatch(seq=0, timestamp=0.0, events=()))  # never reached

    async def _forever(self, request_id: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(request_id)
            raise


@dataclass
class StubServer:
    """One StubWorker served by a grpc.aio server on 127.0.0.1 (on the harness loop)."""

    worker: StubWorker
    server: grpc.aio.Server
    address: str

    @classmethod
    async def start(cls, worker: StubWorker, port: int = 0) -> StubServer:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_WorkerServicer_to_server(worker, server)
        port = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        return cls(worker, server, f"127.0.0.1:{port}")

    async def restart(self) -> None:
        """Serve again on the same port after ``stop`` (a worker coming back)."""
        self.server = (await StubServer.start(self.worker, int(self.address.rsplit(":", 1)[1]))).server

    @property
    def endpoint(self) -> WorkerEndpoint:
        return WorkerEndpoint(worker_id=self.worker.worker_id, role=self.worker.role, address=self.address, pid=0)

    async def stop(self) -> None:
        await self.server.stop(grace=0)


class StubFront:
    """Builds front ends over stub workers: ``stub_front(prefill=[...], decode=[...], **server_config)``;
    ``close`` stops every front end and stub server it built."""

    def __init__(self, model_dir: Path, tokenizer: Tokenizer, loop: LoopThread) -> None:
        self._model_dir, self._tokenizer, self._loop = model_dir, tokenizer, loop
        self.fronts: list[FrontEnd] = []
        self.servers: dict[str, StubServer] = {}

    def __call__(self, prefill: list[StubWorker], decode: list[StubWorker],
                 **server: Any) -> tuple[FrontEnd, list[StubWorker], list[StubWorker]]:
        for worker in prefill + decode:
            self.servers[worker.worker_id] = self._loop.run(StubServer.start(worker))
        config = sim_config(self._model_dir, prefill=len(prefill), decode=len(decode), **server)
        endpoints = [self.servers[w.worker_id].endpoint for w in prefill + decode]
        front = FrontEnd.start(self._loop, config, endpoints, self._tokenizer)
        self.fronts.append(front)
        return front, prefill, decode

    def close(self) -> None:
        for front in self.fronts:
            front.stop()
        for server in self.servers.values():
            self._loop.run(server.stop())
