#!/usr/bin/env bash
# Create .venv-peers with the peer routers the bench/suites/peers.py and overhead.py suites compare pdserve
# with: vllm-router and sglang-router from the package index, pinned, in their own environment (never in
# pdserve's .venv). Idempotent. PDSERVE_PEERS_VENV=DIR puts it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${PDSERVE_PEERS_VENV:-.venv-peers}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "vllm-router==0.1.17" "sglang-router==0.3.2"
"$VENV/bin/vllm-router" --help > /dev/null
"$VENV/bin/sglang-router" launch --help > /dev/null
echo "peers ready in $VENV: vllm-router 0.1.17, sglang-router 0.3.2"
