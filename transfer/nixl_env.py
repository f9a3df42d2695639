"""How KV moves between workers: the transfer settings, and the process environment they give NIXL.

``TransferSettings`` is the config's ``transfer`` section itself (``orchestrator.config``), validated
when the config loads; the launch plan derives each worker's environment and engine settings from it.
vLLM reads ``VLLM_NIXL_SIDE_CHANNEL_HOST``/``PORT`` once per process, so each worker process gets its
own port. On CPU the KV buffer lives in host memory and UCX runs over TCP/shared memory on loopback;
on GPUs UCX picks RDMA/NVLink (``UCX_TLS`` left to UCX unless configured).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TransferSettings(BaseModel):
    """KV transfer settings (frozen; unknown keys fail).

    ``device``: where vLLM's NixlConnector keeps the KV buffer (its ``kv_buffer_device``).
    ``side_channel_host``: the address NIXL's side channel binds and advertises (None: the worker's
    node address, where its gRPC server binds too).
    ``ucx_tls``/``ucx_net_devices``: ``UCX_TLS``/``UCX_NET_DEVICES`` (None: left to UCX).
    ``lease_timeout_s``: how long a prefill worker holds a prompt's KV blocks for the decode side
    (vLLM's ``kv_lease_duration``; the sim engine's ``lease_timeout_s``).
    ``progress_delay_us``: sleep of NIXL's progress thread per poll (0: busy polling).
    ``link_bandwidth_gbps``: the KV link between hosts as the orchestrator assumes it before it has
    measured any handoff (the prior of the decode scorer's transfer cost). None: the simulated engines'
    own link (their profile's ``link_bandwidth_bytes_per_s``), or 10 Gb/s for vLLM. It never changes a
    simulated engine's link: that is the profile's (``engine.args`` may override it).
    ``on_pull_failure``: what the orchestrator does, once per request, when a decode worker cannot read a
    handoff (lease ran out, prefill worker gone, transfer failed) before any token: ``retry`` prefills
    again on another prefill worker (the same one if none other is healthy) and decodes on another decode
    worker when one is healthy, ``recompute`` has the same decode worker prefill the prompt itself, ``fail``
    ends the request with a 502. vLLM's own ``kv_load_failure_policy`` stays ``fail`` so that pdserve sees it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["cpu", "cuda"] = "cpu"
    side_channel_host: str | None = None
    ucx_tls: str | None = "tcp,self,sm"
    ucx_net_devices: str | None = "lo"
    lease_timeout_s: int = Field(default=30, ge=1)
    progress_delay_us: int = Field(default=1000, ge=0)
    link_bandwidth_gbps: float | None = Field(default=None, gt=0)
    on_pull_failure: Literal["retry", "recompute", "fail"] = "retry"

    @property
    def link_bandwidth_bytes_per_s(self) -> float | None:
        return None if self.link_bandwidth_gbps is None else self.link_bandwidth_gbps * 1e9 / 8


def worker_env(settings: TransferSettings, side_channel_port: int = 0) -> dict[str, str]:
    """The environment variables one worker process needs for NIXL (a new dict; caller owns it). Port 0
    and an unset host are filled in on the worker's own node (``worker.node_address``)."""
    env = {"VLLM_NIXL_SIDE_CHANNEL_PORT": str(side_channel_port)}
    if settings.side_channel_host:
        env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = settings.side_channel_host
    if settings.progress_delay_us > 0:
        env["PDSERVE_NIXL_PROGRESS_DELAY_US"] = str(settings.progress_delay_us)
    if settings.ucx_tls:
        env["UCX_TLS"] = settings.ucx_tls
    if settings.ucx_net_devices:
        env["UCX_NET_DEVICES"] = settings.ucx_net_devices
    return env
