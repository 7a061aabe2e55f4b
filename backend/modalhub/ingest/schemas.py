"""The callback event a Modal function sends (compatible with the seed's payload)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]


class EventType(StrEnum):
    STARTED = "function.started"
    PROGRESS = "function.progress"
    SUCCESS = "function.success"
    FAILURE = "function.failure"
    TIMEOUT = "function.timeout"
    CANCELLED = "function.cancelled"


# The seed's payload carries only "status"; map it to a type.
_TYPE_FOR_STATUS = {
    "started": EventType.STARTED,
    "running": EventType.STARTED,
    "progress": EventType.PROGRESS,
    "success": EventType.SUCCESS,
    "succeeded": EventType.SUCCESS,
    "completed": EventType.SUCCESS,
    "failure": EventType.FAILURE,
    "failed": EventType.FAILURE,
    "error": EventType.FAILURE,
    "timeout": EventType.TIMEOUT,
    "timed_out": EventType.TIMEOUT,
    "cancelled": EventType.CANCELLED,
}


class Progress(BaseModel):
    model_config = ConfigDict(extra="ignore")
    percent: float = Field(ge=0, le=100)
    message: str | None = Field(default=None, max_length=2000)


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str | None = Field(default=None, max_length=500)
    message: str | None = Field(default=None, max_length=20_000)
    traceback: str | None = Field(default=None, max_length=200_000)


class EventMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    job_id: Identifier | None = None
    batch_id: Identifier | None = None
    app: str | None = Field(default=None, max_length=200)
    function: str | None = Field(default=None, max_length=200)
    timestamp: str | None = Field(default=None, max_length=64)


class CallbackEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: EventType
    call_id: Identifier
    status: str | None = Field(default=None, max_length=64)
    result: Any = None
    error: ErrorInfo | None = None
    progress: Progress | None = None
    execution_time: float | None = Field(default=None, ge=0)
    metadata: EventMetadata = Field(default_factory=EventMetadata)

    @model_validator(mode="before")
    @classmethod
    def _type_from_status(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" not in data and isinstance(data.get("status"), str):
            mapped = _TYPE_FOR_STATUS.get(data["status"].lower())
            if mapped is not None:
                return {**data, "type": mapped}
        return data

    @model_validator(mode="after")
    def _progress_has_percent(self) -> CallbackEvent:
        if self.type is EventType.PROGRESS and self.progress is None:
            raise ValueError("function.progress needs a progress object with a percent")
        return self

    def derived_event_id(self) -> str:
        """Event id for senders that give none (the seed's header scheme): one per
        (call, type), and per percent for progress so each step is kept."""
        if self.type is EventType.PROGRESS and self.progress is not None:
            return f"{self.call_id}:{self.type.value}:{self.progress.percent:g}"
        return f"{self.call_id}:{self.type.value}"
