"""Frozen request specs: what the benchmark sends, independent of how or when.

A spec carries either chat ``messages`` or a raw ``prompt``; both endpoints accept either form
(``as_messages`` / ``as_prompt`` convert), so any workload can drive ``/v1/chat/completions`` or
``/v1/completions``. Specs are pure values: producing them does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Message:
    """One chat message (``role`` is ``system``, ``user`` or ``assistant``)."""

    role: str
    content: str


@dataclass(frozen=True)
class RequestSpec:
    """One request to send.

    Contract:
    * exactly one of ``messages`` / ``prompt`` is set;
    * ``session_id`` groups the turns of one conversation; turn ``turn`` of a session is sent only
      after turn ``turn - 1`` of the same session has finished (the runner enforces it);
    * ``arrival_s`` is the offset from the start of the run at which the request should be sent in an
      open-loop run, or ``None`` when the load shape decides it (``LoadShape.arrivals`` fills it in).
    """

    request_id: str
    max_tokens: int
    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    session_id: str | None = None
    turn: int = 0
    arrival_s: float | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError(f"{self.request_id}: exactly one of messages / prompt must be set")
        if self.max_tokens < 1:
            raise ValueError(f"{self.request_id}: max_tokens must be >= 1, got {self.max_tokens}")
        if self.turn < 0:
            raise ValueError(f"{self.request_id}: turn must be >= 0")

    def as_messages(self) -> list[dict[str, str]]:
        """Chat form: the messages, or the prompt as a single user message."""
        if self.messages is not None:
            return [{"role": m.role, "content": m.content} for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]

    def as_prompt(self) -> str:
        """Completion form: the prompt, or the messages flattened as ``role: content`` lines."""
        if self.prompt is not None:
            return self.prompt
        lines = [f"{m.role}: {m.content}" for m in self.messages or ()]
        return "\n".join([*lines, "assistant:"])

    def with_arrival(self, arrival_s: float | None) -> RequestSpec:
        """A copy sent at ``arrival_s`` seconds after the run starts."""
        return replace(self, arrival_s=arrival_s)
