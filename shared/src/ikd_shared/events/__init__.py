"""Versioned event schemas (one module per topic) and their CloudEvents envelope."""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ikd_shared import codec
from ikd_shared.events.envelope import CloudEvent, EnvelopeError

M = TypeVar("M", bound=BaseModel)


class UnknownEventType(EnvelopeError):
    pass


class InvalidEventData(EnvelopeError):
    pass


def event_type_of(model: type[BaseModel]) -> str:
    event_type = getattr(model, "event_type", None)
    if not isinstance(event_type, str):
        raise TypeError(f"{model.__name__} declares no event_type")
    return event_type


def to_cloudevent(
    payload: BaseModel,
    *,
    source: str,
    key: str,
    event_id: str | None = None,
    time: dt.datetime | None = None,
    extensions: dict[str, str] | None = None,
) -> CloudEvent:
    """Wrap an event model in a CloudEvent (JSON data, the model's event type)."""
    kwargs: dict[str, object] = {}
    if event_id is not None:
        kwargs["id"] = event_id
    if time is not None:
        kwargs["time"] = time
    return CloudEvent(
        type=event_type_of(type(payload)),
        source=source,
        key=key,
        data=codec.dumps(payload.model_dump(mode="json")),
        dataschema=f"urn:ikd:schema:{event_type_of(type(payload))}",
        extensions=extensions or {},
        **kwargs,  # type: ignore[arg-type]
    )


def decode(event: CloudEvent, models: tuple[type[M], ...]) -> M:
    """The event's data as the model registered for its type; EnvelopeError otherwise."""
    for model in models:
        if event_type_of(model) == event.type:
            try:
                return model.model_validate_json(event.data or b"")
            except ValidationError as error:
                raise InvalidEventData(
                    f"{event.type}: {error.error_count()} invalid fields: "
                    f"{error.errors()[0]['msg']}"
                ) from None
    raise UnknownEventType(f"unknown event type {event.type!r}")
