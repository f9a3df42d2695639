"""pdserve's own chained content hash over full blocks of token ids.

``h_0 = xxh3_64(salt || tokens_0)`` and ``h_i = xxh3_64(h_{i-1} as 8 little-endian bytes || tokens_i)``,
where ``tokens_i`` is block ``i``'s token ids as little-endian uint32 bytes. Only full blocks are hashed:
a trailing partial block has no hash. The orchestrator hashes prompts with it and the prefix index hashes
the token ids carried by ``BlockStored`` events with it, so router and index agree by construction and the
engine's own hashes are never compared with pdserve's.

Pure functions: no state, nothing is mutated, no I/O.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Sequence

import numpy as np
import xxhash

_XXH3 = xxhash.xxh3_64_intdigest
_PACK_U64 = struct.Struct("<Q").pack
_U32_MAX = 0xFFFF_FFFF

TokenIds = Sequence[int] | np.ndarray


def make_salt(model: str, cache_salt: str | None, lora: str | None = None) -> bytes:
    """The 16-byte salt of a chain's first block for ``model``, the tenant's ``cache_salt`` and the LoRA
    adapter ``lora`` the blocks are computed with (None: the base model).

    Different models, adapters, or tenants of one model get different salts, so their chains never share a
    hash. ``None`` and ``""`` are distinct tenants (``None`` means "no salt was given").
    """
    tenant = b"\x00" if cache_salt is None else b"\x01" + cache_salt.encode("utf-8")
    adapter = b"" if lora is None else b"\x00lora\x00" + lora.encode("utf-8")
    return xxhash.xxh3_128_digest(b"pdserve/v1\x00" + model.encode("utf-8") + b"\x00" + tenant + adapter)


def as_uint32(token_ids: TokenIds) -> np.ndarray:
    """Token ids as a contiguous little-endian uint32 array (a view when already one; never mutated).

    Raises ``ValueError`` when an id is negative or does not fit in 32 bits.
    """
    if isinstance(token_ids, np.ndarray):
        if token_ids.dtype == np.dtype("<u4") and token_ids.flags.c_contiguous:
            return token_ids
        if token_ids.size and (int(token_ids.min()) < 0 or int(token_ids.max()) > _U32_MAX):
            raise ValueError("token ids must lie in [0, 2**32)")
        return np.ascontiguousarray(token_ids, dtype="<u4")
    try:
        packed = array.array("I", token_ids)  # the fast path from a list of Python ints
    except OverflowError as exc:
        raise ValueError("token ids must lie in [0, 2**32)") from exc
    if packed.itemsize != 4:  # pragma: no cover - platforms where C unsigned int is not 32 bits
        return np.asarray(token_ids, dtype="<u4")
    return np.frombuffer(packed, dtype=np.uint32).astype("<u4", copy=False)


def block_hash_list(
    token_ids: TokenIds, block_size: int, salt: bytes, *, parent: int | None = None
) -> list[int]:
    """Chained hashes of the full blocks of ``token_ids``, as a fresh list of Python ints (the form the
    prefix index keys on).

    The chain starts from ``salt`` (``parent is None``) or continues after the block whose pdserve hash
    is ``parent`` (then ``salt`` is ignored): hashing a prompt in two pieces, the second with
    ``parent=`` the first piece's last hash, gives the same hashes as hashing it whole.

    Raises ``ValueError`` for ``block_size < 1`` or token ids outside ``[0, 2**32)``.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    tokens = as_uint32(token_ids)
    n_blocks = tokens.size // block_size
    if n_blocks == 0:
        return []
    # One buffer for the prompt, one bytes object per block made by numpy (no per-token Python work).
    blocks: list[bytes] = tokens[: n_blocks * block_size].view(f"V{4 * block_size}").tolist()
    xxh3, pack = _XXH3, _PACK_U64
    h = xxh3((salt if parent is None else pack(parent)) + blocks[0])
    out = [h]
    append = out.append
    for blk in blocks[1:]:
        h = xxh3(pack(h) + blk)
        append(h)
    return out
