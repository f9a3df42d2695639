"""Process environment for vLLM's NixlConnector: side channel, UCX transports, KV buffer placement.

vLLM reads ``VLLM_NIXL_SIDE_CHANNEL_HOST``/``PORT`` once per process, so each worker process gets its
own port. On CPU the KV buffer lives in host memory and UCX runs over TCP/shared memory on loopback;
on GPUs UCX picks RDMA/NVLink (``UCX_TLS`` left to UCX unless configured).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransferSettings:
    """How KV moves between workers. ``device`` is ``cpu`` or ``cuda`` (vLLM's kv_buffer_device)."""

    device: str = "cpu"
    side_channel_host: str = "127.0.0.1"
    ucx_tls: str | None = "tcp,self,sm"
    ucx_net_devices: str | None = "lo"
    lease_timeout_s: int = 30
    progress_delay_us: int = 1000


def worker_env(settings: TransferSettings, side_channel_port: int) -> dict[str, str]:
    """The environment variables one worker process needs for NIXL (a new dict; caller owns it)."""
    env = {
        "VLLM_NIXL_SIDE_CHANNEL_HOST": settings.side_channel_host,
        "VLLM_NIXL_SIDE_CHANNEL_PORT": str(side_channel_port),
    }
    if settings.progress_delay_us > 0:
        env["PDSERVE_NIXL_PROGRESS_DELAY_US"] = str(settings.progress_delay_us)
    if settings.ucx_tls:
        env["UCX_TLS"] = settings.ucx_tls
    if settings.ucx_net_devices:
        env["UCX_NET_DEVICES"] = settings.ucx_net_devices
    return env


def engine_transfer_args(settings: TransferSettings) -> dict[str, object]:
    """Engine args pdserve's vLLM adapter reads for its KVTransferConfig."""
    return {"kv_buffer_device": settings.device, "kv_lease_s": settings.lease_timeout_s}
