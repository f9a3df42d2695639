"""``pdserve workers`` / ``pdserve scale POOL N`` / ``pdserve drain WORKER``: the admin API of a running
server (``orchestrator.api.admin``) from the command line.

The server is ``--url`` (default ``$PDSERVE_URL``, else http://127.0.0.1:8000); an admin key, when the
server wants one, comes from ``--api-key`` or ``$PDSERVE_API_KEY``. ``--wait`` polls the registry until
the change is done (every added worker healthy, every drained one gone) or ``--timeout`` passes.
Exit status: 0 done, 1 the server refused or timed out, 2 unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

_COLUMNS = ("id", "model", "pool", "state", "node", "address", "side_channel", "in_flight", "restarts", "pid")


class AdminError(RuntimeError):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if args.api_key:
        request.add_header("authorization", f"Bearer {args.api_key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise AdminError(f"{exc.code}: {message}", 1) from None
    except (urllib.error.URLError, OSError) as exc:
        raise AdminError(f"cannot reach {args.url}: {exc}", 2) from None


def _workers(args: argparse.Namespace) -> list[dict[str, Any]]:
    return list(_call(args, "GET", "/admin/workers")["data"])


def _print_table(rows: list[dict[str, Any]]) -> None:
    cells = [[str(row.get(c) if row.get(c) is not None else "-") for c in _COLUMNS] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(_COLUMNS)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _wait(args: argparse.Namespace, adding: list[str], leaving: list[str]) -> None:
    deadline = time.monotonic() + args.timeout
    while True:
        rows = {row["id"]: row for row in _workers(args)}
        pending = [w for w in adding if rows.get(w, {}).get("state") != "healthy"]
        pending += [w for w in leaving if w in rows]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise AdminError(f"not done after {args.timeout:.0f} s: {', '.join(pending)}", 1)
        time.sleep(0.5)


def cmd_workers(args: argparse.Namespace) -> int:
    rows = _workers(args)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"replicas": args.replicas}
    if args.model is not None:
        body["model"] = args.model
    order = _call(args, "POST", f"/admin/pools/{args.pool}/scale", body)
    pool = f"{args.model} {args.pool}" if args.model else args.pool
    print(f"{pool} -> {args.replicas}: adding {', '.join(order['adding']) or 'none'}; "
          f"draining {', '.join(order['draining']) or 'none'}")
    if args.wait:
        _wait(args, list(order["adding"]), list(order["draining"]))
        print("done")
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    view = _call(args, "POST", f"/admin/workers/{args.worker}/drain")
    print(f"{view['id']}: {view['state']} ({view['in_flight']} in flight)")
    if args.wait:
        _wait(args, [], [args.worker])
        print("done")
    return 0


def _guarded(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except AdminError as exc:
            print(f"pdserve {args.command}: {exc}", file=sys.stderr)
            return exc.exit_code
    return run


def add_admin_commands(sub: Any) -> None:
    """Register ``workers``, ``scale`` and ``drain`` on ``pdserve``'s subcommand parser ``sub``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("PDSERVE_URL", "http://127.0.0.1:8000"),
                        help="the running server (default: $PDSERVE_URL or http://127.0.0.1:8000)")
    common.add_argument("--api-key", default=os.environ.get("PDSERVE_API_KEY"),
                        help="an admin key when the server has auth on (default: $PDSERVE_API_KEY)")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="return once the change is done")
    waiting.add_argument("--timeout", type=float, default=900.0, help="seconds --wait waits (default 900)")
    workers = sub.add_parser("workers", parents=[common], help="list a running server's workers and their state")
    workers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    workers.set_defaults(func=_guarded(cmd_workers))
    scale = sub.add_parser("scale", parents=[common, waiting], help="grow or shrink a pool of a running server")
    scale.add_argument("pool", choices=["prefill", "decode"])
    scale.add_argument("replicas", type=int)
    scale.add_argument("--model", default=None, help="the pool's model (required when the server serves several)")
    scale.set_defaults(func=_guarded(cmd_scale))
    drain = sub.add_parser("drain", parents=[common, waiting],
                           help="stop sending a worker new requests and retire it once idle")
    drain.add_argument("worker")
    drain.set_defaults(func=_guarded(cmd_drain))
