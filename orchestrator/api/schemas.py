"""Request bodies of the OpenAI API subset pdserve serves, validated strictly: numbers and booleans are
never coerced (``"5"`` or ``true`` is no ``max_tokens``), text must be valid Unicode (no lone surrogate),
and a field the server does not implement is refused, naming it, instead of being silently ignored:
unknown fields, and the OpenAI fields in ``UNSUPPORTED`` unless they carry their no-op value (``null``,
``false``, ``0``, ``[]``, ...). Bad bodies become 400s (``errors.validation_error_handler``)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import PydanticCustomError

_SURROGATE = re.compile("[\ud800-\udfff]")

# OpenAI fields pdserve does not implement, each with the values that mean "not used" (accepted).
UNSUPPORTED: dict[str, tuple[object, ...]] = {
    "tools": (None, []), "tool_choice": (None, "none"),
    "parallel_tool_calls": (None,), "functions": (None, []), "function_call": (None, "none"),
    "best_of": (None, 1), "echo": (None, False), "suffix": (None, ""),
}


def _valid_unicode(value: str) -> str:
    if not value.isascii() and _SURROGATE.search(value):
        raise PydanticCustomError("invalid_unicode", "contains a lone surrogate: not valid Unicode text")
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]
TokenIdKey = Annotated[str, Field(pattern=r"^[0-9]{1,9}$")]
Bias = Annotated[float, Field(ge=-100, le=100)]


def _json_kind(value: Any) -> str | None:
    """The branch of a ``string | array`` field (tags start with ``<`` and are left out of error paths)."""
    if isinstance(value, str):
        return "<str>"
    return "<list>" if isinstance(value, list) else None


def _either(what: str) -> Discriminator:
    return Discriminator(_json_kind, custom_error_type="type_error", custom_error_message=f"expected {what}")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False


class ContentPart(_Body):
    """A content part of a message; only ``text`` parts are served (no images, audio or files)."""

    type: Literal["text"]
    text: Text

    @model_validator(mode="before")
    @classmethod
    def _only_text(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("type"), str) and data["type"] != "text":
            raise PydanticCustomError("unsupported_content", "content parts of type `{kind}` are not supported "
                                      "(only `text`)", {"kind": data["type"]})
        return data


Content = Annotated[Annotated[Text, Tag("<str>")] | Annotated[list[ContentPart], Tag("<list>")],
                    _either("a string or a list of content parts")]
Stop = Annotated[Annotated[Text, Tag("<str>")] | Annotated[list[Text], Tag("<list>")],
                 _either("a string or a list of strings")]
Prompt = Annotated[Annotated[Text, Tag("<str>")] | Annotated[list[int], Tag("<list>")],
                   _either("a string or a list of token ids")]


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Content | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def char_count(self) -> int:
        return len(self.text())


class TextFormat(_Body):
    type: Literal["text"]


class JsonObjectFormat(_Body):
    type: Literal["json_object"]


class JsonSchema(_Body):
    name: Text = Field(max_length=64)
    description: Text | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(_Body):
    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class _Sampling(_Body):
    model: Text
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)  # crosses gRPC as an int64
    stop: Stop | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = None
    cache_salt: Text | None = None
    ignore_eos: bool = False
    return_token_ids: bool = False  # vLLM's extension: the choice carries the generated token ids
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[TokenIdKey, Bias] | None = Field(None, max_length=1024,
                                                      description="Token id (as a string) to a bias in [-100, 100].")
    # vLLM's extensions
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    top_k: int | None = Field(None, ge=-1, le=1 << 20, description="-1 or 0: off.")
    min_tokens: int = Field(0, ge=0)
    stop_token_ids: list[Annotated[int, Field(ge=0, lt=1 << 31)]] | None = Field(None, max_length=64)

    @field_validator(*UNSUPPORTED, mode="before", check_fields=False)
    @classmethod
    def _unsupported(cls, value: object, info: Any) -> None:
        name = info.field_name
        if not any(type(value) is type(ok) and value == ok for ok in UNSUPPORTED[name]):
            raise PydanticCustomError("unsupported_field", "`{name}` is not supported by this server; leave it out",
                                      {"name": name})

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: Any = Field(None, description="Not supported: only null or [].")
    tool_choice: Any = Field(None, description="Not supported: only null or \"none\".")
    parallel_tool_calls: Any = Field(None, description="Not supported: only null.")
    functions: Any = Field(None, description="Not supported: only null or [].")
    function_call: Any = Field(None, description="Not supported: only null or \"none\".")
    response_format: ResponseFormat | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_needs_logprobs(cls, value: int | None, info: Any) -> int | None:
        if value and not info.data.get("logprobs"):
            raise PydanticCustomError("logprobs_required", "`top_logprobs` needs `logprobs` set to true")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def requested_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def requested_json(self) -> tuple[bool, str | None]:
        """(any JSON object, the JSON schema as canonical text) that the answer must follow."""
        fmt = self.response_format
        if isinstance(fmt, JsonSchemaFormat):
            return False, json.dumps(fmt.json_schema.schema_ or {}, sort_keys=True, separators=(",", ":"))
        return isinstance(fmt, JsonObjectFormat), None


class CompletionRequest(_Sampling):
    prompt: Prompt
    logprobs: int | None = Field(None, ge=0, le=20)
    best_of: Any = Field(None, description="Not supported: only null or 1.")
    echo: Any = Field(None, description="Not supported: only null or false.")
    suffix: Any = Field(None, description="Not supported: only null or \"\".")

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: str | list[int]) -> str | list[int]:
        if not value:
            raise PydanticCustomError("too_short", "the prompt is empty")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def requested_logprobs(self) -> int | None:
        return self.logprobs

    def requested_json(self) -> tuple[bool, str | None]:
        return False, None
