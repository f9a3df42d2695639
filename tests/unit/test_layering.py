"""The package layering, read from every import statement (``ast``, so imports inside functions and
``TYPE_CHECKING`` blocks count too):

- ``protocol`` imports nothing else from the repo; ``transfer`` only ``protocol``;
- ``worker`` only ``protocol`` and ``transfer`` (roles are loaded by name, never imported);
- ``prefill`` and ``decode`` only ``worker``, ``protocol`` and ``transfer``;
- the scheduler core (``orchestrator/scheduler``) only ``protocol`` and itself, and no I/O module;
- the orchestrator only itself, ``protocol`` and ``transfer`` (never ``bench``: the load generator is its
  own command);
- the HTTP front end (``orchestrator/api``) only itself, the ``Frontend`` facade, the service's error
  types and ``protocol``: never the pools, the flow's internals, the config or the gRPC client.

Standard library and third-party imports are free except where a rule names them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPO_PACKAGES = frozenset(p.parent.name for p in ROOT.glob("*/__init__.py"))

ALLOWED: dict[str, frozenset[str]] = {
    "protocol": frozenset({"protocol"}),
    "transfer": frozenset({"transfer", "protocol"}),
    "worker": frozenset({"worker", "protocol", "transfer"}),
    "prefill": frozenset({"prefill", "worker", "protocol", "transfer"}),
    "decode": frozenset({"decode", "worker", "protocol", "transfer"}),
    "orchestrator/scheduler": frozenset({"orchestrator.scheduler", "protocol"}),
    "orchestrator": frozenset({"orchestrator", "protocol", "transfer"}),
    "orchestrator/api": frozenset({"orchestrator.api", "orchestrator.frontend", "orchestrator.errors", "protocol"}),
}
IO_MODULES = frozenset({
    "asyncio", "grpc", "fastapi", "starlette", "httpx", "prometheus_client", "uvicorn", "aiohttp", "requests",
    "socket", "selectors", "ssl", "subprocess", "multiprocessing", "urllib", "http", "zmq", "ray", "logging",
})


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of every module ``source`` imports; ``package`` is the importing module's package
    (relative imports resolve against it). ``from P import name`` counts as importing ``P``."""
    names: set[str] = set()
    here = package.split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def package_of(path: Path) -> str:
    """The package a file's relative imports start from: its folder, as a dotted name."""
    return ".".join(path.relative_to(ROOT).parent.parts)


def in_repo(name: str) -> bool:
    return name.split(".")[0] in REPO_PACKAGES


def allowed(name: str, prefixes: frozenset[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def files(folder: str) -> list[Path]:
    found = sorted((ROOT / folder).rglob("*.py"))
    assert found, f"no Python files under {folder}"
    return found


def violations_in(source: str, folder: str) -> list[str]:
    """Repo modules ``source`` (a file directly under ``folder``) imports that ``folder`` may not."""
    names = imported_modules(source, folder.replace("/", "."))
    return sorted(n for n in names if in_repo(n) and not allowed(n, ALLOWED[folder]))


def violations(folder: str) -> list[str]:
    out = []
    for path in files(folder):
        for name in sorted(imported_modules(path.read_text(), package_of(path))):
            if in_repo(name) and not allowed(name, ALLOWED[folder]):
                out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_packages_import_only_the_layers_below_them(folder: str) -> None:
    assert violations(folder) == []


def test_the_scheduler_core_imports_no_io_module() -> None:
    found = []
    for path in files("orchestrator/scheduler"):
        for name in imported_modules(path.read_text(), package_of(path)):
            if name.split(".")[0] in IO_MODULES:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    assert found == []


def test_the_checker_sees_relative_nested_and_type_checking_imports() -> None:
    source = """
from typing import TYPE_CHECKING
from . import sibling
from ..engine import EngineAdapter
import grpc.aio
if TYPE_CHECKING:
    from orchestrator.flow import RequestFlow
def f():
    import decode.role
"""
    assert imported_modules(source, package_of(ROOT / "worker/engines/sim/adapter.py")) == {
        "typing", "worker.engines.sim", "worker.engines.engine", "grpc.aio", "orchestrator.flow", "decode.role",
    }
    assert imported_modules("from .engine import X", package_of(ROOT / "worker/__init__.py")) == {"worker.engine"}
    assert violations_in("import prefill.role", "worker") == ["prefill.role"]
    assert violations_in("from orchestrator.pools import client", "orchestrator/scheduler") == [
        "orchestrator.pools"]
    assert violations_in("from orchestrator.scheduler.request import X\nimport numpy", "orchestrator/scheduler") == []
    assert {"bench", "orchestrator", "protocol", "transfer", "worker", "prefill", "decode"} <= REPO_PACKAGES
