"""Registration refuses a worker that speaks another wire version: ``Service.connect`` raises
``IncompatibleWorker`` naming the worker and both versions, and builds no service."""

from __future__ import annotations

from pathlib import Path

import pytest
from pd_harness import LoopThread, StubServer, StubWorker, sim_config

from orchestrator.pools.compat import IncompatibleWorker
from orchestrator.service import Service
from protocol.types import WIRE_VERSION

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("version", [0, WIRE_VERSION - 1, WIRE_VERSION + 1])
def test_a_worker_with_another_wire_version_is_refused(tiny_model_dir: Path, harness_loop: LoopThread,
                                                       version: int) -> None:
    good = harness_loop.run(StubServer.start(StubWorker("prefill-0", "prefill")))
    odd = harness_loop.run(StubServer.start(StubWorker("decode-7", "decode", wire_version=version)))
    try:
        config = sim_config(tiny_model_dir, prefill=1, decode=1)
        with pytest.raises(IncompatibleWorker) as info:
            harness_loop.run(Service.connect(config, [good.endpoint, odd.endpoint]))
        error = info.value
        assert (error.worker_id, error.worker_version, error.expected) == ("decode-7", version, WIRE_VERSION)
        message = str(error)
        assert "decode-7" in message and f"wire version {version}" in message and f"speaks {WIRE_VERSION}" in message
    finally:
        harness_loop.run(good.stop())
        harness_loop.run(odd.stop())


def test_workers_with_this_wire_version_are_accepted(tiny_model_dir: Path, harness_loop: LoopThread) -> None:
    servers = [harness_loop.run(StubServer.start(StubWorker(wid, role)))
               for wid, role in (("prefill-0", "prefill"), ("decode-0", "decode"))]
    try:
        config = sim_config(tiny_model_dir, prefill=1, decode=1)
        service = harness_loop.run(Service.connect(config, [s.endpoint for s in servers]))
        try:
            assert service.decode.get("decode-0").description.wire_version == WIRE_VERSION
        finally:
            harness_loop.run(service.close())
    finally:
        for server in servers:
            harness_loop.run(server.stop())
