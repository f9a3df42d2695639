"""``pdserve``: ``up`` (launch pools + front end), ``model prepare``, ``config check``, ``keys add``, and
``workers`` / ``scale`` / ``drain`` against a running server (``orchestrator.admin_cli``).

The load generator is its own command, ``pdserve-bench`` (``python -m bench``): the orchestrator never
imports ``bench``; ``pdserve bench`` only points there.

``pdserve up --config FILE`` connects to a Ray cluster when ``--ray-address`` (or ``RAY_ADDRESS``, as
under ``ray job submit``) is given, otherwise starts an embedded single-node Ray on 127.0.0.1; starts
the pools as actors, then serves the OpenAI API until SIGINT/SIGTERM (``ray job stop``), and then
stops every worker it started before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("pdserve")
BENCH_MOVED = "the load generator is `pdserve-bench ARGS...` (or `python -m bench ARGS...`)"


def _prepare_model(config) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.model_prep import PREPARERS

    folders = [(config.model, "model", "config.json", " (set model.prepare or point model.path at a model)")]
    folders += [(adapter, "LoRA adapter", "adapter_config.json", "") for adapter in config.model.adapters]
    for entry, what, marker, hint in folders:
        path = entry.resolved_path
        if entry.prepare and not (path / ".pdserve-complete").exists():
            log.info("preparing %s %s into %s (once)", what, entry.prepare, path)
            PREPARERS[entry.prepare](path)
        if not (path / marker).exists():
            raise SystemExit(f"{what} folder {path} has no {marker}{hint}")


def _uvicorn_server(app, host: str, port: int):  # type: ignore[no-untyped-def]
    """A uvicorn server whose shutdown is ours: signals set ``should_exit`` and are not re-raised, so the
    workers are stopped before the process exits."""
    import uvicorn

    class Quiet(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Quiet(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))


def _bound_port(server) -> int:  # type: ignore[no-untyped-def]
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("server is not listening")


async def _serve(deployment, launched, ready_file: str | None) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.api.app import create_app
    from orchestrator.api.text import Tokenizer
    from orchestrator.frontend import Frontend
    from orchestrator.serving import close_models, open_models

    launcher, run_id, plans, endpoints = launched
    served = await open_models(deployment, endpoints, launcher, run_id=run_id, plans=plans)
    try:
        tokenizers = {config.model.name: Tokenizer(str(config.model.resolved_path)) for config in deployment}
        shared = deployment.shared.server
        server = _uvicorn_server(create_app(Frontend(served), tokenizers), shared.host, shared.port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if task.done():
            await task
            return
        url = f"http://{shared.host}:{_bound_port(server)}"
        print(f"PDSERVE_READY {url}", flush=True)
        for service, _ in served:
            log.info("serving %s at %s/v1 (prefill %d, decode %d workers)", service.config.model.name, url,
                     len(service.prefill or []), len(service.decode))
        if ready_file:
            Path(ready_file).write_text(url + "\n")
        await task
    finally:
        await close_models(served)


def cmd_up(args: argparse.Namespace) -> int:
    from orchestrator.config import ConfigError, parse_overrides
    from orchestrator.deployment import load_deployment
    from orchestrator.launch.launchers import LAUNCHERS
    from orchestrator.launch.plan import plan_deployment

    try:
        deployment = load_deployment(args.config, parse_overrides(args.set or []))
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    for model in deployment:
        _prepare_model(model)
    config = deployment.shared
    if config.auth.keys_file is not None:  # checked before any worker starts
        from orchestrator.auth.keys import read_keys

        try:
            read_keys(config.auth.keys_file)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"auth.keys_file: {exc}") from None
    address = args.ray_address or config.ray.address
    launcher = LAUNCHERS[args.launcher](address=address, namespace=config.ray.namespace,
                                        num_cpus=config.ray.num_cpus)
    stopping = False

    def stop_now(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop_now) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_id = uuid.uuid4().hex[:8]
        plans = plan_deployment(deployment, run_id=run_id)
        log.info("starting %d worker process(es) with the %s launcher", len(plans), args.launcher)
        endpoints = launcher.start(plans, config.server.worker_start_timeout_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        asyncio.run(_serve(deployment, (launcher, run_id, plans, endpoints), args.ready_file))
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        log.info("stopping workers")
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        launcher.stop()
        if args.launcher == "ray":
            with contextlib.suppress(Exception):
                import ray

                ray.shutdown()
    return 0


def cmd_model_prepare(args: argparse.Namespace) -> int:
    from orchestrator.model_prep import PREPARERS

    path = PREPARERS[args.name](Path(args.out) if args.out else None)  # None: the preparer's default folder
    print(path)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from orchestrator.config import ConfigError, parse_overrides
    from orchestrator.deployment import load_deployment

    try:
        deployment = load_deployment(args.config, parse_overrides(args.set or []))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if len(deployment) == 1:
        print(deployment.shared.model_dump_json(indent=2))
    else:  # each model resolved, shared sections included
        print("[\n" + ",\n".join(m.model_dump_json(indent=2) for m in deployment) + "\n]")
    return 0


def cmd_keys_add(args: argparse.Namespace) -> int:
    from orchestrator.auth.keys import KeyRecord, append_key, hash_key, new_key

    key = new_key()
    try:
        record = KeyRecord(args.tenant, hash_key(key), args.admin, args.max_concurrency, args.rpm)
    except ValueError as exc:
        print(f"pdserve keys add: {exc}", file=sys.stderr)
        return 2
    append_key(args.file, record)
    print(f"added key {record.key_id} of tenant {record.tenant} to {args.file}; it is shown only once:",
          file=sys.stderr)
    print(key, flush=True)
    return 0


# Commands that hand every argument to a module of ``bench`` in a child process: the planner and the
# autoscaler drive the simulated engine's timing model and the bench workloads, which the orchestrator
# never imports. ``pdserve NAME ARGS`` runs ``python -m MODULE ARGS``.
FORWARDED = {
    "plan": ("bench.planner", "search the prefill:decode split for SLOs on the simulated engine"),
    "autoscale": ("bench.planner.autoscale", "opt-in loop sizing a running server's pools for SLOs"),
}


def cmd_forwarded(args: argparse.Namespace) -> int:
    import subprocess

    return subprocess.call([sys.executable, "-m", FORWARDED[args.command][0], *args.args])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdserve", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="launch prefill/decode pools and the OpenAI front end")
    up.add_argument("--config", default="configs/local-cpu.yaml")
    up.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (dotted key)")
    up.add_argument("--ray-address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or embedded)")
    up.add_argument("--launcher", choices=["ray", "local"], default="ray")
    up.add_argument("--ready-file", default=None, help="write the front end's URL here once it serves")
    up.set_defaults(func=cmd_up)
    model = sub.add_parser("model", help="model folders")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    prep = model_sub.add_parser("prepare", help="build a local model folder (offline)")
    prep.add_argument("name", choices=["smollm2", "tiny"])
    prep.add_argument("--out", default=None)
    prep.set_defaults(func=cmd_model_prepare)
    cfg = sub.add_parser("config", help="configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate a config file and print it resolved")
    check.add_argument("config")
    check.add_argument("--set", action="append", metavar="KEY=VALUE")
    check.set_defaults(func=cmd_config_check)
    keys = sub.add_parser("keys", help="API keys (auth.keys_file)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    add = keys_sub.add_parser("add", help="make a key for TENANT, print it once, append its hash to --file")
    add.add_argument("tenant")
    add.add_argument("--file", required=True, help="the keys file (JSONL; created with mode 0600)")
    add.add_argument("--admin", action="store_true", help="may use admin endpoints (protected /metrics, /health)")
    add.add_argument("--max-concurrency", type=int, default=None, help="requests of this key in flight at once")
    add.add_argument("--rpm", type=float, default=None, help="requests per minute of this key (token bucket)")
    add.set_defaults(func=cmd_keys_add)
    from orchestrator.admin_cli import add_admin_commands

    add_admin_commands(sub)  # workers, scale, drain: against a running server
    sub.add_parser("bench", help=f"moved: {BENCH_MOVED}", add_help=False)
    for name, (_, summary) in FORWARDED.items():  # prefix_chars="+": no `-` flag is this parser's
        forwarded = sub.add_parser(name, help=f"{summary} (`pdserve {name} --help`)", add_help=False, prefix_chars="+")
        forwarded.add_argument("args", nargs=argparse.REMAINDER)
        forwarded.set_defaults(func=cmd_forwarded)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        print(f"pdserve bench: {BENCH_MOVED}", file=sys.stderr)
        return 2
    logging.basicConfig(level=os.environ.get("PDSERVE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
