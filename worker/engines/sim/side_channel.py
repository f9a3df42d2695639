"""The sim engine's side channel: a TCP listener each engine opens, on which a decode engine in another
process reports that it has read a handoff, as NIXL's completion notification does. The prefill engine
then frees the handoff's blocks at once and answers whether it still held them; a dead peer refuses the
connection, as NIXL's handshake with a dead peer fails.

Wire: the decode side sends the handoff's ``request_id`` and a newline; the prefill side answers
``ok`` (it held the blocks, now freed) or ``gone`` (it no longer held them), and hangs up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from protocol.types import KVHandoff

ReadNotice = Callable[[str], bool]  # request id of a handoff read -> whether its blocks were still held


async def open_side_channel(host: str, port: int, on_read: ReadNotice) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port); ``on_read`` frees a handoff a peer has read. The
    caller owns the server and closes it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5.0):
                line = await reader.readline()
            if line:
                writer.write(b"ok\n" if on_read(line.decode().strip()) else b"gone\n")
                await writer.drain()
        except (OSError, TimeoutError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, host, port)


async def notify_read(handoff: KVHandoff, timeout_s: float = 2.0) -> tuple[str, str] | None:
    """Tell the handoff's prefill engine its blocks were read. ``("source_gone", why)`` if it refuses the
    connection, does not answer within ``timeout_s``, or no longer held them; None once it freed them, or
    if the handoff names no port."""
    if not handoff.port:
        return None
    where = f"engine {handoff.engine_id!r} at {handoff.host}:{handoff.port}"
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(handoff.host, handoff.port)
            try:
                writer.write(handoff.request_id.encode() + b"\n")
                await writer.drain()
                answer = (await reader.readline()).strip()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        return "source_gone", f"{where} is unreachable: {exc}"
    if answer != b"ok":
        return "source_gone", f"{where} no longer holds the blocks of {handoff.request_id!r}"
    return None
