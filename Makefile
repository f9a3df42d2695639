PY ?= .venv/bin/python
CONFIG ?= configs/local-cpu.yaml

.PHONY: setup setup-dev serve test test-fast lint proto bench clean

setup:            ## create .venv with pdserve, vLLM CPU, NIXL and Ray
	bash scripts/setup.sh

serve: setup      ## serve the default chat model disaggregated on CPU
	.venv/bin/pdserve up --config $(CONFIG)

test: setup       ## unit + integration + e2e (real vLLM on CPU)
	$(PY) -m pytest -q -p no:cacheprovider tests

test-fast:        ## unit + simulated-engine tests only (seconds)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/integration

lint:
	$(PY) -m ruff check .
	$(PY) -m mypy orchestrator prefill decode worker transfer protocol bench

proto:            ## regenerate protocol/worker_pb2*.py from protocol/worker.proto
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. protocol/worker.proto

bench:            ## regenerate the committed benchmark results (hours; SUITES=... for some; see bench/README.md)
	PY=$(PY) bash bench/run_all.sh

clean:
	rm -rf .venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache
