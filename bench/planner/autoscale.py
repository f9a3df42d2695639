"""``pdserve autoscale`` (also ``python -m bench.planner.autoscale``): an opt-in control loop that sizes a running
server's prefill and decode pools for a TTFT and an ITL objective, after NVIDIA Dynamo's SLA planner
(https://docs.nvidia.com/dynamo/latest/design-docs/component-design/planner-design): observe, correct the
performance model's prediction by what was observed, rescale.

    pdserve autoscale --profile llama-3.1-8b-h100 --slo-ttft-ms 500 --slo-itl-ms 25            # prints only
    pdserve autoscale --profile llama-3.1-8b-h100 --slo-ttft-ms 500 --slo-itl-ms 25 --max-workers 16 --apply

Every ``--interval`` seconds it scrapes ``GET /metrics`` and takes the change since the last scrape for one
model (request rate, mean prompt, cached and output tokens, TTFT and ITL as ``--stat``), reads the pools from
``GET /admin/workers``, and decides (``bench.planner.control``; the sizing is ``bench.planner.sla``, on the sim
profile's step-time model). It prints each decision and the ``pdserve scale`` commands that apply it; only
with ``--apply`` does it send them (``POST /admin/pools/{pool}/scale``), without waiting for the workers.
Exit status: 0 done or stopped (Ctrl-C), 1 the server refused, 2 bad arguments or the server unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from orchestrator.admin_cli import AdminError
from protocol.sim_profile import ProfileFileError, SimProfile, read_profile

from .control import Decision, Limits, Observed, Settings, State, decide
from .observe import STATS, models_of, parse_metrics, pool_view, window
from .sla import Slo


class Server:
    """The HTTP edge: the three calls the loop makes, errors as ``AdminError`` (1 refused, 2 unreachable)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise AdminError(f"cannot reach {self._client.base_url}: {exc}", 2) from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise AdminError(f"{method} {path}: {response.status_code}: {message}", 1)
        return response

    def metrics(self) -> str:
        return self._call("GET", "/metrics").text

    def workers(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/admin/workers").json()["data"])

    def scale(self, pool: str, replicas: int, model: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"replicas": replicas, **({"model": model} if model else {})}
        return dict(self._call("POST", f"/admin/pools/{pool}/scale", body).json())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pdserve autoscale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("server")
    g.add_argument("--url", default=os.environ.get("PDSERVE_URL", "http://127.0.0.1:8000"),
                   help="the running server (default: $PDSERVE_URL or http://127.0.0.1:8000)")
    g.add_argument("--api-key", default=os.environ.get("PDSERVE_API_KEY"),
                   help="an admin key when the server has auth on (default: $PDSERVE_API_KEY)")
    g.add_argument("--model", help="the model whose pools to size (required when the server serves several)")
    g = p.add_argument_group("model and objectives")
    g.add_argument("--profile", default="llama-3.1-8b-h100", help="sim profile predicting step times: a name in "
                   "configs/sim-profiles/ or a .yaml path")
    g.add_argument("--speedup", type=float, help="the profile's speedup (default: the file's); a simulated fleet "
                   "must use its engine.args.speedup, real GPUs 1")
    g.add_argument("--slo-ttft-ms", type=float, required=True)
    g.add_argument("--slo-itl-ms", "--slo-tpot-ms", dest="slo_itl_ms", type=float, required=True)
    g.add_argument("--stat", choices=STATS, default="mean", help="observed TTFT/ITL statistic (default mean, "
                   "exact; pNN from histogram buckets, as coarse as they are)")
    g = p.add_argument_group("control")
    g.add_argument("--interval", type=float, default=30.0, help="seconds between decisions (default 30)")
    g.add_argument("--min-requests", type=int, default=20, help="skip an interval with fewer requests")
    g.add_argument("--smoothing", type=float, default=0.5, help="weight of a new correction (0-1]")
    for pool in ("prefill", "decode"):
        g.add_argument(f"--min-{pool}", type=int, default=1)
        g.add_argument(f"--max-{pool}", type=int, default=64)
    g.add_argument("--max-workers", type=int, help="cap on prefill + decode workers (shrink orders go first)")
    g.add_argument("--max-step", type=int, default=2, help="most workers a pool changes by per interval")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="apply", action="store_false", help="print decisions only (default)")
    mode.add_argument("--apply", dest="apply", action="store_true", help="send the scale orders")
    p.set_defaults(apply=False)  # store_false's own default would be True: a dry run must be the default
    g.add_argument("--once", action="store_true", help="one interval, then exit")
    g.add_argument("--max-intervals", type=int, help="stop after this many intervals")
    return p


def _settings(ns: argparse.Namespace) -> tuple[Settings, list[str]]:
    errors = [f"--{f.replace('_', '-')} must be > 0" for f in ("slo_ttft_ms", "slo_itl_ms", "interval")
              if not getattr(ns, f) > 0]
    if not 0 < ns.smoothing <= 1:
        errors.append("--smoothing must be in (0, 1]")
    if ns.min_prefill < 0 or ns.min_decode < 1 or ns.max_step < 1 or ns.min_requests < 1:
        errors.append("need --min-prefill >= 0, --min-decode >= 1, --max-step >= 1, --min-requests >= 1")
    if ns.min_prefill > ns.max_prefill or ns.min_decode > ns.max_decode:
        errors.append("each pool's --min must be <= its --max")
    if ns.max_workers is not None and ns.max_workers < ns.min_prefill + ns.min_decode:
        errors.append("--max-workers must be >= --min-prefill + --min-decode")
    if ns.max_intervals is not None and ns.max_intervals < 1:
        errors.append("--max-intervals must be >= 1")
    limits = Limits(ns.min_prefill, ns.max_prefill, ns.min_decode, ns.max_decode, ns.max_workers, ns.max_step)
    slo = Slo(ns.slo_ttft_ms / 1000, ns.slo_itl_ms / 1000)
    return Settings(slo, limits, ns.smoothing, ns.min_requests), errors


def orders(decision: Decision, shrink_first: bool) -> list[tuple[str, int]]:
    """``(pool, replicas)`` for each pool the decision changes: the shrinking one first when ``shrink_first``
    (a worker cap: the total never passes it), else the growing one (capacity arrives before any leaves)."""
    if not decision.changes:
        return []
    pairs = [(p, getattr(decision.target, p), getattr(decision.target, p) - getattr(decision.current, p))
             for p in ("prefill", "decode")]
    pairs = [x for x in pairs if x[2] != 0]
    pairs.sort(key=lambda x: x[2] if shrink_first else -x[2])
    return [(pool, n) for pool, n, _ in pairs]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.1f} ms"


def _x(value: float | None) -> str:
    return "-" if value is None else f"x{value:.2f}"


def render(d: Decision, model: str, stat: str) -> list[str]:
    """The lines printed for one decision."""
    o, load = d.observed, d.observed.load
    head = (f"[autoscale {time.strftime('%H:%M:%S')}] {model}: {o.requests} requests in {o.seconds:.0f} s "
            f"({load.rate:.2f} req/s); prompt {load.prompt_tokens:.0f} tokens ({load.cached_tokens:.0f} cached), "
            f"output {load.output_tokens:.0f}; healthy {o.healthy.label}, ordered {d.current.label}")
    if d.skipped is not None:
        return [head, f"  skipped: {d.skipped}"]
    pred = d.prediction
    assert pred is not None and d.sized is not None
    util = "-" if pred.prefill_utilisation is None else f"{pred.prefill_utilisation:.2f}"
    return [head,
            f"  TTFT {stat} {_ms(o.ttft_s)} observed, {_ms(pred.ttft_s)} predicted (prefill utilisation {util}); "
            f"ITL {stat} {_ms(o.itl_s)} observed, {_ms(pred.itl_s)} predicted at batch {pred.decode_batch:.1f}",
            f"  corrections: prefill {_x(d.corrections.prefill)}, decode {_x(d.corrections.decode)}; needs "
            f"{d.needed[0]:.2f}P {d.needed[1]:.2f}D -> sized {d.sized.label} -> target {d.target.label}",
            *(f"  note: {n}" for n in d.notes)]


def run(ns: argparse.Namespace, server: Server, profile: SimProfile, settings: Settings, *,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
        out: Callable[[str], None] = print) -> int:
    """The loop: a baseline scrape, then per interval sleep, scrape, decide, print (and with ``ns.apply`` send)
    the orders. Raises ``AdminError`` only before the first interval; later failures skip the interval."""
    rows = server.workers()
    models = models_of(rows)
    model = ns.model or (models[0] if len(models) == 1 else None)
    if model is None or model not in models:
        raise AdminError(f"--model must name one of the served models: {', '.join(models) or 'none'}", 2)
    if pool_view(rows, model).colocated:
        raise AdminError(f"{model} is served colocated: autoscale sizes disaggregated prefill/decode pools", 2)
    before, since = parse_metrics(server.metrics(), model), clock()
    state, done = State(), 0
    limit = 1 if ns.once else ns.max_intervals
    while limit is None or done < limit:
        sleep(ns.interval)
        done += 1
        try:
            text, rows = server.metrics(), server.workers()
        except AdminError as exc:
            out(f"[autoscale] interval skipped: {exc}")
            continue
        now = clock()
        after = parse_metrics(text, model)
        win = window(before, after, now - since)
        before, since = after, now
        if win is None:
            out("[autoscale] interval skipped: a counter went back (the server restarted?)")
            continue
        view = pool_view(rows, model)
        observed = Observed(win.seconds, round(min(win.requests, win.finished)), win.load(), win.ttft.stat(ns.stat),
                            win.itl.stat(ns.stat), view.healthy, view.size, view.changing)
        decision, state = decide(profile, observed, state, settings)
        for line in render(decision, model, ns.stat):
            out(line)
        for pool, replicas in orders(decision, shrink_first=settings.limits.max_workers is not None):
            command = f"pdserve scale {pool} {replicas}" + (f" --model {ns.model}" if ns.model else "")
            if not ns.apply:
                out(f"  {command}    (dry run: --apply sends it)")
                continue
            try:
                order = server.scale(pool, replicas, ns.model)
                out(f"  {command}: adding {', '.join(order.get('adding', ())) or 'none'}; "
                    f"draining {', '.join(order.get('draining', ())) or 'none'}")
            except AdminError as exc:
                out(f"  {command}: refused: {exc}")
    return 0


def main(argv: list[str] | None = None, transport: httpx.BaseTransport | None = None,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """The command; ``transport``, ``clock`` and ``sleep`` are for tests (a fake server, a fake clock)."""
    ns = build_parser().parse_args(argv)
    settings, errors = _settings(ns)
    try:
        fields = read_profile(ns.profile)
        profile = SimProfile.model_validate({**fields, **({"speedup": ns.speedup} if ns.speedup else {})})
    except (ValueError, ProfileFileError) as exc:
        errors.append(str(exc))
    if errors:
        print("pdserve autoscale: " + "; ".join(errors), file=sys.stderr)
        return 2
    headers = {"authorization": f"Bearer {ns.api_key}"} if ns.api_key else {}
    with httpx.Client(base_url=ns.url, headers=headers, timeout=10.0, transport=transport) as client:
        try:
            return run(ns, Server(client), profile, settings, clock=clock, sleep=sleep)
        except AdminError as exc:
            print(f"pdserve autoscale: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("pdserve autoscale: stopped", file=sys.stderr)
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
