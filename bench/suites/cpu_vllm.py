"""Suite cpu_vllm: real vLLM CPU engines on the 2-core host, SmolLM2-135M-Instruct in float32.

Targets, run one after the other with the same seeded requests:

- ``pdserve``: ``configs/local-cpu.yaml`` as ``make serve`` runs it, on an embedded Ray (one prefill and
  one decode vLLM worker, KV over NIXL, each worker pinned to its own core by pdserve; the prefill's
  first token opens each answer);
- ``pdserve-decode-first``: the same with ``disaggregation.first_token: decode`` (the decode worker
  samples the first token after the pull);
- ``pdserve-local``: the same with every prompt prefilled on the decode worker (no NIXL pull; everything
  else as ``pdserve``), so ``pdserve`` against it prices decoding after a pull;
- ``vllm-1core``: one plain vLLM OpenAI server of the same model and engine settings, its compute
  threads bound to one core (``VLLM_CPU_OMP_THREADS_BIND=0``);
- ``vllm-1core-strict``: the same with every thread of the server (engine core, model runner, API
  server) held to that core, as pdserve holds each worker to its own core;
- ``vllm-strict-core1``: the same held to core 1, the core pdserve's decode worker computes on;
- ``vllm-1core-nixl``: the same as ``vllm-1core`` with NixlConnector loaded and never used (what the connector alone
  costs one engine: its agent, progress thread and per-step bookkeeping);
- ``vllm-strict-core1-nixl``: ``vllm-strict-core1`` with NixlConnector loaded and never used;
- ``vllm-pd``: vLLM's own P/D: two plain vLLM servers with NixlConnector, prefill computing on core 0 and
  decode on core 1 (as vLLM binds them), behind ``bench.suites.pd_proxy`` (prefill, then decode).

Each run also records where the time went: every server thread's CPU seconds during the workload and
the cores it may run on (``threads.json``), and for pdserve the per-request means of its stages from its
``/metrics`` (``stages.json``: prefill RPC, handoff to the first token, the NIXL pull within it).

Workloads (one request at a time, 32 tokens out, unique prompts so no prefix is cached): ``short``
(about 200 prompt tokens) and ``long`` (about 2,000). ``--repeats`` rounds over all targets, each target
started afresh in every round; the report gives the median over rounds with the lowest and highest.

    python -m bench.suites.cpu_vllm --out bench/results/cpu_vllm             # run, then the report
    python -m bench.suites.cpu_vllm --out bench/results/cpu_vllm --report-only

Writes ``OUT/<target>-<workload>-r<round>/`` (the client's files), ``OUT/results.md``, ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.suites.common import CpuSampler, Running, bench, git, log, machine, serve_http, serve_pdserve, write_json
from bench.suites.cpu_vllm_report import report
from bench.suites.where_time_goes import scrape_stages, stage_means, thread_times, thread_usage
from transfer.ports import free_ports

MODEL_DIR = Path("~/.cache/pdserve/models/smollm2-135m-instruct").expanduser()
MODEL_NAME = "SmolLM2-135M-Instruct"
# The engine settings of configs/local-cpu.yaml, as vLLM server flags.
VLLM_ARGS = ["--dtype", "float32", "--enforce-eager", "--block-size", "32", "--max-model-len", "4096",
             "--max-num-seqs", "32", "--served-model-name", MODEL_NAME, "--enable-prompt-tokens-details"]
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_HOST_IP": "127.0.0.1"}


def serve_vllm(model: str, port: int, args: Sequence[str], env: dict[str, str] | None = None,
               cores: str | None = None) -> contextlib.AbstractContextManager[Running]:
    """A plain single vLLM OpenAI server on 127.0.0.1:PORT in its own session; with ``cores`` (a
    ``taskset`` list) every process and thread of it is held to those cores."""
    log_path = Path(tempfile.mkdtemp(prefix="vllm-suite-")) / "server.log"
    cmd = [*(["taskset", "-c", cores] if cores else []), sys.executable, "-m",
           "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1", "--port", str(port), *args]
    log("start: " + " ".join(cmd).replace(sys.executable, "python"))
    return serve_http(cmd, f"http://127.0.0.1:{port}", log_path, "vLLM", 900,
                      {"VLLM_HOST_IP": "127.0.0.1", **(env or {})})


WORKLOADS = {
    "short": ["--workload", "unique", "--prompt-words", "60"],
    "long": ["--workload", "unique", "--prompt-words", "600"],
}
COMMON = ["--max-tokens", "32", "--ignore-eos", "--seed", "7", "--concurrency", "1",
          "--temperature", "0"]
ONE_CORE_ENV = {**VLLM_ENV, "VLLM_CPU_OMP_THREADS_BIND": "0", "OMP_NUM_THREADS": "1"}
NIXL_ARGS = ["--kv-transfer-config", json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"})]
STAGE_SETTLE_S = 3.0  # the front end polls worker load (NIXL pull totals) every 0.5 s


@dataclass
class Target:
    """A started target: where the client sends requests, and the process trees it runs in."""

    url: str
    roots: list[int]
    pdserve: bool = False


@contextlib.contextmanager
def serve_vllm_pd() -> Iterator[Target]:
    """vLLM's own P/D on the two cores: prefill server, decode server, proxy; stopped in reverse order."""
    with contextlib.ExitStack() as stack:
        servers = []
        for core in (0, 1):
            port, side = free_ports(2)
            env = {**VLLM_ENV, "VLLM_CPU_OMP_THREADS_BIND": str(core), "OMP_NUM_THREADS": "1",
                   "VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1", "VLLM_NIXL_SIDE_CHANNEL_PORT": str(side)}
            servers.append(stack.enter_context(serve_vllm(str(MODEL_DIR), port, [*VLLM_ARGS, *NIXL_ARGS], env=env)))
        proxy = stack.enter_context(serve_proxy(servers[0].url, servers[1].url))
        yield Target(proxy.url, [s.proc.pid for s in (*servers, proxy)])


def serve_proxy(prefill: str, decode: str) -> contextlib.AbstractContextManager[Running]:
    """``bench.suites.pd_proxy`` on a free loopback port, in its own session."""
    port = free_ports(1)[0]
    return serve_http([sys.executable, "-m", "bench.suites.pd_proxy", "--prefill", prefill, "--decode", decode,
                       "--port", str(port)], f"http://127.0.0.1:{port}",
                      Path(tempfile.mkdtemp(prefix="pd-proxy-")) / "proxy.log", "the P/D proxy", 60, grace_s=10.0)


@contextlib.contextmanager
def serve_pdserve_target(overrides: Sequence[str] = ()) -> Iterator[Target]:
    # As `make serve` runs it: the config's own launcher (embedded Ray), not the bench's local one.
    with serve_pdserve("configs/local-cpu.yaml", overrides, ready_timeout_s=900, launcher=None) as pd:
        yield Target(pd.url, [pd.proc.pid], pdserve=True)


def serve_pdserve_decode_first() -> contextlib.AbstractContextManager[Target]:
    """pdserve with ``disaggregation.first_token: decode``: the decode worker samples the first token
    after the pull, as before the prefill's token opened answers."""
    return serve_pdserve_target(["disaggregation.first_token=decode"])


def serve_pdserve_local() -> contextlib.AbstractContextManager[Target]:
    """pdserve as shipped, except that every prompt is prefilled on the decode worker (a
    ``min_remote_tokens`` no prompt reaches): the same processes, cores, front end and gRPC path as
    ``pdserve``, with no NIXL pull. Against ``pdserve``, it prices decoding after a pull."""
    return serve_pdserve_target(["disaggregation.min_remote_tokens=1000000"])


@contextlib.contextmanager
def serve_one_core(extra_args: Sequence[str] = (), extra_env: dict[str, str] | None = None,
                   cores: str | None = None) -> Iterator[Target]:
    env = {**ONE_CORE_ENV, **(extra_env or {})}
    with serve_vllm(str(MODEL_DIR), free_ports(1)[0], [*VLLM_ARGS, *extra_args], env=env, cores=cores) as one:
        yield Target(one.url, [one.proc.pid])


def serve_one_core_strict() -> contextlib.AbstractContextManager[Target]:
    """Plain vLLM with every thread on core 0, as each pdserve worker is held to its core: its engine
    core, model runner and API server share the one core ``vllm-1core`` binds only its OpenMP thread to."""
    return serve_one_core(cores="0")


def serve_one_core_strict_decode_core() -> contextlib.AbstractContextManager[Target]:
    """Plain vLLM with every thread on core 1: the core pdserve's decode worker holds on a 2-core host
    (the prefill worker takes core 0), so the two decode on the same core."""
    return serve_one_core(extra_env={"VLLM_CPU_OMP_THREADS_BIND": "1"}, cores="1")


def _unused_nixl_env() -> dict[str, str]:
    """A loopback side channel on a free port, and NIXL's progress thread given the 1 ms sleep pdserve
    gives it (``transfer.nixl_env``)."""
    return {"VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1", "VLLM_NIXL_SIDE_CHANNEL_PORT": str(free_ports(1)[0]),
            "PDSERVE_NIXL_PROGRESS_DELAY_US": "1000"}


def serve_one_core_nixl() -> contextlib.AbstractContextManager[Target]:
    """Plain vLLM on one core with NixlConnector loaded but never used: what the connector alone costs
    a single engine."""
    return serve_one_core(NIXL_ARGS, _unused_nixl_env())


def serve_strict_core1_nixl() -> contextlib.AbstractContextManager[Target]:
    """``vllm-strict-core1`` with NixlConnector loaded but never used: the connector's own cost on the
    decode core, next to pdserve's decode worker, which has it loaded and uses it."""
    return serve_one_core(NIXL_ARGS, {**_unused_nixl_env(), "VLLM_CPU_OMP_THREADS_BIND": "1"}, cores="1")


TARGETS: dict[str, Callable[[], contextlib.AbstractContextManager[Target]]] = {
    "pdserve": serve_pdserve_target,
    "pdserve-decode-first": serve_pdserve_decode_first,
    "vllm-1core": serve_one_core,
    "vllm-1core-strict": serve_one_core_strict,
    "vllm-strict-core1": serve_one_core_strict_decode_core,
    "pdserve-local": serve_pdserve_local,
    "vllm-1core-nixl": serve_one_core_nixl,
    "vllm-strict-core1-nixl": serve_strict_core1_nixl,
    "vllm-pd": serve_vllm_pd,
}


def _threads(roots: list[int]) -> dict[tuple[int, int], Any]:
    return {key: t for root in roots for key, t in thread_times(root).items()}


def bench_args(name: str, url: str, out: Path, workload: str, requests: int) -> list[str]:
    return ["--target", f"{name}={url}", *WORKLOADS[workload], "--num-requests", str(requests), *COMMON,
            "--api", "completions",
            "--timeout", "300", "--duration", "900", "--total-duration", "1200", "--no-progress", "--out", str(out)]


def run_target(name: str, out: Path, workloads: list[str], repeat: int, requests: int) -> list[dict[str, Any]]:
    """Start one target, run every workload against it (repeat ``repeat``), stop it."""
    rows = []
    with TARGETS[name]() as server:
        for workload in workloads:
            run_dir = out / f"{name}-{workload}-r{repeat}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            argv = bench_args(name, server.url, run_dir, workload, requests)
            stages0 = scrape_stages(server.url) if server.pdserve else None
            threads0 = _threads(server.roots)
            with CpuSampler(server.roots) as cpu:
                rc = bench(argv)
            write_json(run_dir / "threads.json", thread_usage(threads0, _threads(server.roots)))
            if stages0 is not None:
                time.sleep(STAGE_SETTLE_S)
                write_json(run_dir / "stages.json", stage_means(stages0, scrape_stages(server.url)))
            records = run_dir / "records.json"
            if records.exists():
                with records.open("rb") as src, gzip.open(str(records) + ".gz", "wb", compresslevel=9) as dst:
                    shutil.copyfileobj(src, dst)
                records.unlink()
            assert cpu.report is not None
            write_json(run_dir / "cpu.json", cpu.report)
            log(f"{name}/{workload}: rc {rc}, host busy mean {cpu.report.host_busy_mean:.2f}")
            rows.append({"target": name, "workload": workload, "repeat": repeat, "rc": rc,
                         "argv": ["pdserve-bench", *argv],
                         "dir": run_dir.name, "host_busy_mean": cpu.report.host_busy_mean,
                         "server_cores_mean": cpu.report.server_cores_mean})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/cpu_vllm")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--workloads", default="short,long")
    p.add_argument("--repeats", type=int, default=3, help="rounds over every target, each target restarted")
    p.add_argument("--requests", type=int, default=8, help="requests per target, workload and round")
    p.add_argument("--report-only", action="store_true")
    ns = p.parse_args()
    out = Path(ns.out)
    if not ns.report_only:
        out.mkdir(parents=True, exist_ok=True)
        index: dict[str, Any] = {"machine": machine(), "commit": _commit(), "argv": sys.argv, "model": MODEL_NAME,
                                 "config": "configs/local-cpu.yaml", "vllm_args": VLLM_ARGS,
                                 "vllm_env": ONE_CORE_ENV, "runs": []}
        for repeat in range(1, ns.repeats + 1):  # rounds, so slow drift of the host touches every target
            for name in ns.targets.split(","):
                index["runs"] += run_target(name, out, ns.workloads.split(","), repeat, ns.requests)
                write_json(out / "runs.json", index)
    report(out)


def _commit() -> str:
    return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


if __name__ == "__main__":
    main()
