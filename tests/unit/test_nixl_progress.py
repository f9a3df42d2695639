"""The NIXL progress-thread delay plugin, on fake bindings (no NIXL needed)."""

from __future__ import annotations

import os
import types

import pytest

from transfer import nixl_progress


class AgentConfig:
    """Stands in for the pybind class: ``pthrDelay`` is a property with a getter and a setter."""

    def __init__(self) -> None:
        self._delay = 0

    def _get(self) -> int:
        return self._delay

    def _set(self, value: int) -> None:
        self._delay = value

    pthrDelay = property(_get, _set)


def fake_api() -> types.SimpleNamespace:
    return types.SimpleNamespace(nixlBind=types.SimpleNamespace(nixlAgentConfig=AgentConfig))


def test_patched_config_never_goes_below_the_delay() -> None:
    api = fake_api()
    nixl_progress._patch(api, 1000)
    cls = api.nixlBind.nixlAgentConfig
    assert cls is not AgentConfig and issubclass(cls, AgentConfig)
    config = cls()
    config.pthrDelay = 0  # what NIXL's Python API does
    assert config.pthrDelay == 1000
    config.pthrDelay = 5000
    assert config.pthrDelay == 5000
    assert AgentConfig().pthrDelay == 0  # the original class is untouched


def test_patch_is_idempotent() -> None:
    api = fake_api()
    nixl_progress._patch(api, 1000)
    first = api.nixlBind.nixlAgentConfig
    nixl_progress._patch(api, 2000)
    assert api.nixlBind.nixlAgentConfig is first
    config = first()
    config.pthrDelay = 0
    assert config.pthrDelay == 1000


def test_patch_ignores_bindings_without_the_class() -> None:
    api = types.SimpleNamespace(nixlBind=types.SimpleNamespace())
    nixl_progress._patch(api, 1000)
    nixl_progress._patch(types.SimpleNamespace(), 1000)
    assert not hasattr(api.nixlBind, "nixlAgentConfig")


def _unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Unset ``name`` for this test and restore it afterwards, even if the code under test sets it."""
    monkeypatch.setenv(name, "placeholder")
    monkeypatch.delenv(name)


@pytest.fixture
def fake_packages(monkeypatch: pytest.MonkeyPatch) -> dict[str, types.SimpleNamespace]:
    apis = {"nixl_cu12._api": fake_api()}
    imported: list[str] = []

    def import_module(name: str) -> types.SimpleNamespace:
        imported.append(name)
        if name in apis:
            return apis[name]
        raise ImportError(name)

    monkeypatch.setattr(nixl_progress.importlib, "import_module", import_module)
    return apis


@pytest.mark.parametrize("value", [None, "", "0", "-5"])
def test_install_does_nothing_unless_a_positive_delay_is_set(
        fake_packages: dict[str, types.SimpleNamespace], monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(nixl_progress.ENV, raising=False)
    else:
        monkeypatch.setenv(nixl_progress.ENV, value)
    _unset(monkeypatch, nixl_progress.RCACHE_ENV)
    nixl_progress.install()
    assert fake_packages["nixl_cu12._api"].nixlBind.nixlAgentConfig is AgentConfig
    assert nixl_progress.RCACHE_ENV not in os.environ


def test_install_patches_the_installed_package(fake_packages: dict[str, types.SimpleNamespace],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(nixl_progress.ENV, "250")
    nixl_progress.install()
    nixl_progress.install()
    config = fake_packages["nixl_cu12._api"].nixlBind.nixlAgentConfig()
    config.pthrDelay = 0
    assert config.pthrDelay == 250


@pytest.mark.parametrize(("before", "after"), [(None, "1024"), ("64", "64")])
def test_install_keeps_vllms_ucx_rcache_limit_which_its_early_import_would_lose(
        fake_packages: dict[str, types.SimpleNamespace], monkeypatch: pytest.MonkeyPatch,
        before: str | None, after: str) -> None:
    monkeypatch.setenv(nixl_progress.ENV, "1000")
    if before is None:
        _unset(monkeypatch, nixl_progress.RCACHE_ENV)
    else:
        monkeypatch.setenv(nixl_progress.RCACHE_ENV, before)
    nixl_progress.install()
    assert os.environ[nixl_progress.RCACHE_ENV] == after
