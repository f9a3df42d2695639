"""Simulated workers behind vLLM's HTTP API, for routers other than pdserve:
``python -m worker.sim_http --profile NAME --workers N --host 127.0.0.1 --base-port P [--events-base-port Q]
[--replay-base-port R] [--events-topic T] [--tokenizer DIR] [--served-model-name NAME] [--set FIELD=VALUE ...]``.

Starts N sim engines (``worker.engines.sim.SimEngine``, the adapter pdserve's gRPC worker drives) in one
process. Worker ``i`` serves vLLM's OpenAI API (``worker.engines.sim.openai_face``) on ``host:P+i`` (P 0: any
free port) and publishes its KV events in vLLM's ZMQ format (``worker.engines.sim.zmq_events``) on
``tcp://host:Q+i``, or on a per-process ``ipc://`` path without ``--events-base-port``; with
``--replay-base-port`` it also answers vLLM's replay requests on ``tcp://host:R+i``. Engines of one process
hand KV to each other directly; engines of different processes through their side channels, so a prefill
on one ``sim_http`` process and a decode on another work as two vLLM instances with NixlConnector do.

Each worker prints one JSON line on stdout once it serves: ``{"worker", "engine_id", "model", "url",
"events", "replay"}``. SIGTERM or SIGINT shuts everything down (streams in flight end with
``finish_reason: "abort"``) and the process exits 0. ``--tokenizer`` (a local model folder) enables text
prompts and chat, and sets the profile's ``vocab_size``/``eos_token_id`` to the tokenizer's unless
``--set`` gives them; ``--set`` overrides any sim profile field (``protocol.sim_profile``).
Hosts must be addresses (no wildcard): the handoffs name them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Generator
from typing import Any

import yaml

from protocol.engine_args import SimArgs
from protocol.launch import EngineSpec

Ready = Callable[[dict[str, object]], None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m worker.sim_http", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", required=True, help="sim profile: a name in configs/sim-profiles or a YAML path")
    p.add_argument("--workers", type=int, default=1, help="simulated engines in this process")
    p.add_argument("--host", default="127.0.0.1", help="address every port binds (no wildcard)")
    p.add_argument("--base-port", type=int, required=True, help="worker i serves HTTP on base-port + i (0: any)")
    p.add_argument("--events-base-port", type=int, help="worker i publishes KV events on tcp://host:Q+i")
    p.add_argument("--replay-base-port", type=int, help="worker i answers event replay on tcp://host:R+i")
    p.add_argument("--events-topic", default="", help="ZMQ topic of the KV events (vLLM's default: empty)")
    p.add_argument("--tokenizer", help="local model folder whose tokenizer and chat template to use")
    p.add_argument("--served-model-name", help="the model name the API answers to (default: the profile's)")
    p.add_argument("--worker-id-prefix", default=f"simhttp-{os.getpid()}", help="engine id = PREFIX-i")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a profile field")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be >= 1")
    if args.host in ("0.0.0.0", "::", "") or "*" in args.host:
        p.error("--host must be an address, not a wildcard: KV handoffs name it")
    for flag in ("base_port", "events_base_port", "replay_base_port"):
        value = getattr(args, flag)
        if value is not None and not 0 <= value <= 65535 - args.workers:
            p.error(f"--{flag.replace('_', '-')} out of range")
    return args


def overrides(args: argparse.Namespace, vocab: tuple[int, int | None] | None) -> dict[str, Any]:
    """Profile field overrides: the tokenizer's vocabulary size and EOS id (``vocab``), then ``--set``."""
    fields: dict[str, Any] = {}
    if vocab is not None:
        fields["vocab_size"] = vocab[0]
        if vocab[1] is not None:
            fields["eos_token_id"] = vocab[1]
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE")
        fields[name.strip()] = yaml.safe_load(value)
    return fields


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class PortDispatch:
    """One ASGI app over several listening sockets: each connection goes to the app of the port it
    arrived on (``scope["server"]``), so one uvicorn server (one event-loop tick) serves every worker."""

    def __init__(self, apps: dict[int, Any]) -> None:
        self.apps = apps

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        _, port = scope.get("server") or ("", 0)
        await self.apps[int(port)](scope, receive, send)


async def run(args: argparse.Namespace, ready: Ready | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set, or SIGTERM/SIGINT when ``stop`` is None; then shut down everything."""
    import uvicorn

    from worker.engines.sim.adapter import SimEngine
    from worker.engines.sim.openai_face import SimOpenAIFace
    from worker.engines.sim.text import Tokenizer
    from worker.engines.sim.zmq_events import ZmqKvEventPublisher

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:  # this process handles its signals itself
            yield

    emit = ready or (lambda line: print(json.dumps(line), flush=True))
    loop = asyncio.get_running_loop()
    signals = stop is None
    stop = stop or asyncio.Event()
    sockets: list[socket.socket] = []
    engines: list[SimEngine] = []
    publishers: list[ZmqKvEventPublisher] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        tokenizer = Tokenizer(args.tokenizer) if args.tokenizer else None
        sim_args = SimArgs.model_validate({"profile": args.profile, **overrides(
            args, (tokenizer.vocab_size, tokenizer.eos_token_id) if tokenizer else None)})
        for i in range(args.workers):  # every port first: a busy one fails before any engine starts
            sockets.append(_bind(args.host, args.base_port + i if args.base_port else 0))
        apps, lines = {}, []
        for i, sock in enumerate(sockets):
            spec = EngineSpec(model=args.served_model_name or "", worker_id=f"{args.worker_id_prefix}-{i}",
                              role="both", args=sim_args, handoff_host=args.host)
            engine = SimEngine(spec)
            engines.append(engine)
            await engine.start()
            host = _url_host(args.host)
            events = (f"tcp://{host}:{args.events_base_port + i}" if args.events_base_port is not None
                      else f"ipc://{tempfile.gettempdir()}/pdserve-sim-http-{os.getpid()}-{i}.ipc")
            replay = f"tcp://{host}:{args.replay_base_port + i}" if args.replay_base_port is not None else None
            publisher = ZmqKvEventPublisher(events, topic=args.events_topic, replay_endpoint=replay)
            publishers.append(publisher)
            tasks.append(asyncio.create_task(publisher.run(engine.kv_events()), name=f"kv-events-{i}"))
            face = SimOpenAIFace(engine, tokenizer=tokenizer, served_model_name=args.served_model_name)
            port = sock.getsockname()[1]
            apps[port] = face.app
            lines.append({"worker": i, "engine_id": engine.engine_id, "model": face.model,
                          "url": f"http://{host}:{port}", "events": events, "replay": replay})
        config = uvicorn.Config(PortDispatch(apps), lifespan="off", log_level="warning", access_log=False,
                                timeout_graceful_shutdown=2)
        server = _Server(config)
        serving = asyncio.create_task(server.serve(sockets=sockets), name="sim-http")
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():
            serving.result()  # raises why it could not start
        for line in lines:
            emit(line)
        await stop.wait()
        for engine in engines:  # streams in flight end now ("abort"), so the server closes at once
            await engine.shutdown()
        server.should_exit = True
        await serving
    finally:
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for publisher in publishers:
            publisher.close()
        for engine in engines:
            await engine.shutdown()
        for sock in sockets:
            sock.close()


def main(argv: list[str] | None = None) -> None:
    """The command: exits 0 after SIGTERM/SIGINT, 2 with a one-line reason for a bad profile or a busy port."""
    from pydantic import ValidationError

    args = parse_args(argv)
    try:
        asyncio.run(run(args))
    except (ValidationError, OSError) as exc:
        print(f"sim_http: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
