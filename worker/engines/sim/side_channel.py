"""The sim engine's side channel: a TCP listener each engine opens so that a decode engine in another
process can tell whether the prefill engine of a handoff is still alive, as NIXL's handshake with a dead
peer fails. Nothing is exchanged on it."""

from __future__ import annotations

import asyncio

from protocol.types import KVHandoff


async def open_side_channel(host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port); the caller owns the server and closes it."""
    return await asyncio.start_server(_hang_up, host, port)


async def unreachable(handoff: KVHandoff, timeout_s: float = 2.0) -> tuple[str, str] | None:
    """``("source_gone", why)`` if the handoff's side channel refuses a connection (or does not answer
    within ``timeout_s``); None if it answers, or if the handoff names no port."""
    if not handoff.port:
        return None
    try:
        async with asyncio.timeout(timeout_s):
            _reader, writer = await asyncio.open_connection(handoff.host, handoff.port)
    except (OSError, TimeoutError) as exc:
        return "source_gone", f"engine {handoff.engine_id!r} at {handoff.host}:{handoff.port} is unreachable: {exc}"
    writer.close()
    return None


async def _hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()
