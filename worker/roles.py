"""Roles registered by name: what a worker does with its engine for each RPC.

A role is a record of duty handlers. ``prefill`` answers the Prefill RPC with a ``KVHandoff``;
``generate`` answers the Generate RPC with a stream of ``TokenChunk``s. A duty a role leaves None is
refused by the worker (FAILED_PRECONDITION). Role modules register themselves when imported, as engine
adapters do: ``prefill/role.py`` registers ``prefill``, ``decode/role.py`` registers ``decode``, and
``load_role`` imports ``<name>.role`` on first use, so the runtime has no static import of any role.
A combined role (``both``: a colocated worker) takes every duty of the roles it names.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from protocol.types import GenerateCall, KVHandoff, PrefillCall, TokenChunk
from worker.engine import EngineAdapter

PrefillHandler = Callable[[EngineAdapter, PrefillCall], Awaitable[KVHandoff]]
"""Run the call's prompt, keep its KV blocks under a lease, return their handoff. Raises ``ValueError``
for a request the engine rejects and ``DutyFailed`` when the engine ends without a handoff."""

GenerateHandler = Callable[[EngineAdapter, GenerateCall], AsyncIterator[TokenChunk]]
"""Stream the answer; the last chunk is ``finished``. Closing the iterator early aborts the request in
the engine. Raises ``ValueError`` (while iterating) for a request the engine rejects."""


class DutyFailed(RuntimeError):
    """The engine ended a duty without its result (e.g. a prefill without a handoff): the worker's
    fault, not the request's (gRPC INTERNAL, retryable elsewhere)."""


@dataclass(frozen=True)
class Role:
    """A named set of duties. ``prefill``/``generate`` are None for duties the role does not take."""

    name: str
    prefill: PrefillHandler | None = None
    generate: GenerateHandler | None = None


ROLES: dict[str, Role] = {}
COMBINED: Mapping[str, tuple[str, ...]] = MappingProxyType({"both": ("prefill", "decode")})
"""Roles made of other roles' duties (a colocated worker prefills and decodes); each part is a role
``load_role`` can load."""


def register_role(role: Role) -> Role:
    """Make ``role`` loadable by ``load_role(role.name)``; a name registers once. Returns ``role``."""
    if role.name in ROLES or role.name in COMBINED:
        raise ValueError(f"role {role.name!r} registered twice")
    ROLES[role.name] = role
    return role


def load_role(name: str) -> Role:
    """The role named ``name``, importing ``<name>.role`` (or each part's, for a combined role) if it is
    not registered yet. Raises ``KeyError`` naming the known roles when there is no such role."""
    parts = COMBINED.get(name, (name,))
    roles = [_load_one(part) for part in parts]
    if len(roles) == 1:
        return roles[0]
    prefill = [r.prefill for r in roles if r.prefill is not None]
    generate = [r.generate for r in roles if r.generate is not None]
    if len(prefill) > 1 or len(generate) > 1:
        raise ValueError(f"role {name!r}: two of {list(parts)} take the same duty")
    return Role(name, prefill=prefill[0] if prefill else None, generate=generate[0] if generate else None)


def _load_one(name: str) -> Role:
    if name not in ROLES and name.isidentifier():
        module = f"{name}.role"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name not in (name, module):
                raise  # the role module exists but one of its imports is missing
    try:
        return ROLES[name]
    except KeyError:
        raise KeyError(f"unknown role {name!r}; known: {sorted({*ROLES, *COMBINED})}") from None
