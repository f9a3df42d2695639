"""Worker process entry: ``python -m worker --spec JSON [--spec JSON ...]``.

Sets the process environment each engine needs (before vLLM is imported), loads each worker's role
by name (``worker.roles``), builds and starts the engines, serves each on its own gRPC port on its
node's address (``worker.node_address``: loopback unless the launcher or the config names another),
prints one ready line per worker (``READY_PREFIX`` + ``WorkerReady`` JSON) on stdout, and shuts down
cleanly on SIGTERM/SIGINT. Several specs in one process are meant for simulated engines (a fleet on
one host); a vLLM worker runs alone in its process, because NIXL and vLLM read process-wide settings.

The process asks the kernel to kill it when its parent dies (Linux ``PR_SET_PDEATHSIG``), so a
worker never outlives the Ray actor that started it; its vLLM engine cores die with it in turn
(``transfer.parent_death``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from protocol.launch import READY_PREFIX, WorkerLaunchSpec, WorkerReady
from transfer import parent_death
from worker.node_address import bind_on_node, node_address, side_channel_of

log = logging.getLogger("pdserve.worker")


async def _serve(specs: list[WorkerLaunchSpec], node: str) -> None:
    """Serve every worker of ``specs`` (bound already) until SIGTERM; ``node`` is this node's address."""
    import grpc

    from protocol import worker_pb2_grpc as pb_grpc
    from worker.engine import build_engine
    from worker.event_fanout import EventFanout
    from worker.roles import load_role
    from worker.server import WorkerService

    servers: list[grpc.aio.Server] = []
    engines = []
    fanouts = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        roles = [load_role(spec.role) for spec in specs]  # an unknown role fails before any engine starts
        for spec, role in zip(specs, roles, strict=True):
            engine = build_engine(spec.engine)
            engines.append(engine)
            await engine.start()
            fanout = EventFanout(engine)
            fanout.start()
            fanouts.append(fanout)
            server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                              ("grpc.max_send_message_length", 64 << 20),
                                              ("grpc.so_reuseport", 0)])
            pb_grpc.add_WorkerServicer_to_server(
                WorkerService(spec.worker_id, role, str(spec.grpc_host), spec.engine.kind, engine, fanout), server
            )
            port = server.add_insecure_port(f"{spec.grpc_host}:{spec.grpc_port}")
            await server.start()
            servers.append(server)
            reachable = node if spec.grpc_host in ("0.0.0.0", "::") else spec.grpc_host  # a wildcard is no address
            ready = WorkerReady(worker_id=spec.worker_id, address=f"{reachable}:{port}", node=node, pid=os.getpid(),
                                side_channel=side_channel_of(spec))
            print(READY_PREFIX + ready.model_dump_json(), flush=True)
        await stop.wait()
    finally:
        for server in servers:
            await server.stop(grace=1.0)
        for fanout in fanouts:
            await fanout.close()
        for engine in engines:
            with contextlib.suppress(Exception):
                await engine.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker")
    parser.add_argument("--spec", action="append", required=True, help="WorkerLaunchSpec as JSON")
    args = parser.parse_args(argv)
    specs = [WorkerLaunchSpec.from_json(text) for text in args.spec]
    node = node_address(specs[0].interface)  # one process, one node
    specs = [bind_on_node(spec, node) for spec in specs]
    parent_death.die_with_parent(signal.SIGTERM)
    os.environ[parent_death.ENV] = str(os.getpid())  # the engines this process starts die with it
    logging.basicConfig(level=os.environ.get("PDSERVE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s [worker] %(name)s: %(message)s", stream=sys.stderr)
    for spec in specs:
        os.environ.update(spec.engine.env)
        if spec.engine.cpu_share is not None:  # before any thread starts: they inherit the mask
            from worker.cpu_share import pin

            pin(spec.engine.cpu_share, os.environ)
    asyncio.run(_serve(specs, node))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
