#!/usr/bin/env bash
# Regenerate the committed benchmark results under bench/results/ (see bench/README.md): the suites
# whose drivers and results are both committed: routing, fleet, cpu_vllm, idle_ttft, links, peers,
# overhead and disagg. Long (four to five hours on the 2-core development VM) and not part of CI. Every step is
# bounded: it has a wall-clock limit below (SIGINT at the limit, SIGKILL 120 s later); the drivers start
# each server in its own process session and stop it, and every client run has a request count, a
# sending duration and a per-request timeout.
# Run from anywhere: `make bench` or `bash bench/run_all.sh`.
#   SUITES=routing        bash bench/run_all.sh    # a subset (routing fleet cpu_vllm idle_ttft links peers overhead disagg)
#   OUT=/tmp/results      bash bench/run_all.sh    # somewhere else than bench/results
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/results}
SUITES=${SUITES:-"routing fleet cpu_vllm idle_ttft links peers overhead disagg"}

failed=()
step() {  # step NAME LIMIT_SECONDS CMD...: run one bounded step; on failure note it and go on
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    if ! timeout --signal=INT --kill-after=120 "$limit" "$@"; then
        echo "=== $name FAILED or timed out" >&2
        failed+=("$name")
    fi
}

for suite in $SUITES; do
    case $suite in
        routing)  # the scheduler core alone, no engines (bench/results/routing/README.md)
            step routing-latency 900 "$PY" -m bench.routing.decision_latency --out "$OUT/routing/decision_latency.json"
            step routing-multiturn 1800 "$PY" -m bench.routing.multiturn --out "$OUT/routing/multiturn_events.json"
            step routing-multiturn-approx 1800 "$PY" -m bench.routing.multiturn --approx \
                --out "$OUT/routing/multiturn_approx.json"
            step routing-multiturn-qb2 1800 "$PY" -m bench.routing.multiturn --queue-bound 2 \
                --out "$OUT/routing/multiturn_events_qb2.json"
            ;;
        fleet)    # prefill policies on the simulated 64-worker fleet (bench/results/fleet/README.md)
            # 30 runs (2 workloads x 3 load points x 5 policies), a fresh 64-worker server each: ~45 min
            step fleet 5400 "$PY" -m bench.suites.fleet --out "$OUT/fleet"
            step fleet-report 600 "$PY" -m bench.suites.fleet_report --out "$OUT/fleet"
            ;;
        cpu_vllm) # real vLLM CPU: pdserve vs plain vLLM on one core and vLLM's P/D (bench/results/cpu_vllm/README.md)
            step cpu_vllm 3600 "$PY" -m bench.suites.cpu_vllm --out "$OUT/cpu_vllm" \
                --targets pdserve,pdserve-decode-first,vllm-1core,vllm-pd --repeats 3 --requests 4
            # pdserve against plain vLLM with only its OpenMP thread on one core, and with every thread there
            step cpu_vllm_strict 2400 "$PY" -m bench.suites.cpu_vllm --out "$OUT/cpu_vllm_strict" \
                --targets pdserve,vllm-1core,vllm-1core-strict --repeats 3 --requests 4
            # decoding after a NIXL pull against the same server prefilling on its decode worker (2k prompts)
            step cpu_vllm_pull 2400 "$PY" -m bench.suites.cpu_vllm --out "$OUT/cpu_vllm_pull" \
                --targets pdserve,pdserve-local,vllm-strict-core1 --workloads long --repeats 3 --requests 4
            # the same fresh 2k prompt to pdserve and plain vLLM on the decode core (with and without
            # NixlConnector), all up side by side; three runs, then pooled (bench/results/paired/README.md)
            for r in 1 2 3; do
                step paired-r$r 3000 "$PY" -m bench.suites.paired --out "$OUT/paired/r$r" --pairs 12
            done
            step paired-pooled 600 "$PY" -m bench.suites.paired --out "$OUT/paired" \
                --pool "$OUT/paired/r1,$OUT/paired/r2,$OUT/paired/r3"
            ;;
        idle_ttft) # plain vLLM's TTFT after 0-3 s idle, one core (bench/results/idle_ttft/README.md): ~3 min
            step idle_ttft 900 "$PY" -m bench.suites.idle_ttft --out "$OUT/idle_ttft"
            ;;
        links)    # decode by load + measured links vs load only, two racks (bench/suites/links.py)
            # 6 runs (2 arms x 3 repeats), a fresh 32-worker server each: ~25 min
            step links 3600 "$PY" -m bench.suites.links --out "$OUT/links"
            step links-report 600 "$PY" -m bench.suites.links_report --out "$OUT/links"
            ;;
        peers)    # pdserve vs vllm-router and sglang-router on 16 simulated workers (bench/suites/peers.py)
            # 81 runs (3 traces x 3 seeds x 9 arms), fresh servers each: ~90 min; the peers' own venv first
            step peers-setup 900 bash scripts/setup_peers.sh
            step peers 7200 "$PY" -m bench.suites.peers --out "$OUT/peers"
            step peers-report 600 "$PY" -m bench.suites.peers_report --out "$OUT/peers"
            ;;
        overhead) # latency each router adds over a direct call, zero-compute workers (bench/suites/overhead.py)
            step overhead-setup 900 bash scripts/setup_peers.sh
            step overhead 1800 "$PY" -m bench.suites.overhead --out "$OUT/overhead"
            step overhead-report 600 "$PY" -m bench.suites.overhead_report --out "$OUT/overhead"
            ;;
        disagg)   # disaggregated vs colocated, 16 simulated H100s, prefill bursts (bench/suites/disagg.py)
            # 9 servers (3 fleets x 3 seeds), 4 runs each: ~35 min
            step disagg 3600 "$PY" -m bench.suites.disagg --out "$OUT/disagg"
            step disagg-report 600 "$PY" -m bench.suites.disagg_report --out "$OUT/disagg"
            ;;
        *) echo "unknown suite $suite (known: routing fleet cpu_vllm idle_ttft links peers overhead disagg)" >&2; exit 2 ;;
    esac
done

if ((${#failed[@]})); then
    echo "failed steps: ${failed[*]}" >&2
    exit 1
fi
echo "all suites done; results under $OUT"
