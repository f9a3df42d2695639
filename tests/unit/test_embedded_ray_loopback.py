"""The embedded single-node Ray resolves its node address to loopback even when ``ray`` was imported
before the launcher (the end-to-end check of every socket is tests/e2e/test_loopback_only.py)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import os, ray
from ray._private import ray_constants, services
from orchestrator.launch.launchers import _keep_embedded_ray_on_loopback
assert ray_constants.ENABLE_RAY_CLUSTER, "precondition: Ray read the variable as on"
_keep_embedded_ray_on_loopback()
print(services.get_node_ip_address(), os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"])
"""


def test_the_embedded_launcher_corrects_a_ray_imported_earlier() -> None:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # as a multi-node test shell may leave it
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    assert out == ["127.0.0.1", "0"]
