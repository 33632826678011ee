"""Explain: the timeline of an event, notification or delivery, with every reason."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import typing as t

import sqlalchemy.orm as sa_orm

from .errors import TraceNotFoundError
from .models import Delivery, Event, Notification

Traceable: t.TypeAlias = Event | Notification | Delivery

PREFIXES: dict[str, type[Traceable]] = {"evt": Event, "ntf": Notification, "dlv": Delivery}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One line of a delivery's timeline."""

    at: dt.datetime
    kind: str  # "planned", "transition" or "attempt"
    status: str
    reason: str
    detail: str | None = None


@dataclasses.dataclass(frozen=True)
class Trace:
    """The explained history of one event, notification or delivery.

    ``str(trace)`` is the text ``flask chimeway trace`` prints.
    """

    subject: Traceable
    event: Event
    notifications: list[Notification]
    timelines: dict[int, list[Entry]]

    def __str__(self) -> str:
        return format_trace(self)


def resolve(session: sa_orm.Session, ref: str | int) -> Traceable:
    """Find what ``ref`` names: ``evt_12``, ``ntf_12``, ``dlv_12``, or a bare number when
    only one kind of row has that id.

    :raise TraceNotFoundError: when nothing (or more than one thing) matches.
    """
    text = str(ref).strip()
    prefix, _, number = text.rpartition("_")
    if not number.isdigit() or (prefix and prefix not in PREFIXES):
        raise TraceNotFoundError(
            f"{text!r} is not an id Chimeway can trace; pass evt_<id>, ntf_<id> or dlv_<id>."
        )
    kinds = [PREFIXES[prefix]] if prefix else list(PREFIXES.values())
    found: list[Traceable] = []
    for kind in kinds:
        row = session.get(kind, int(number))
        if row is not None:
            found.append(t.cast(Traceable, row))
    if not found:
        raise TraceNotFoundError(f"No event, notification or delivery matches {text!r}.")
    if len(found) > 1:
        names = ", ".join(row.public_id for row in found)
        raise TraceNotFoundError(f"{text!r} is ambiguous ({names} exist); pass one of those.")
    return found[0]


def trace(session: sa_orm.Session, ref: str | int | Traceable) -> Trace:
    """Explain an event, notification or delivery (an object or an id, see :func:`resolve`)."""
    subject = ref if isinstance(ref, Event | Notification | Delivery) else resolve(session, ref)
    if isinstance(subject, Event):
        event, notifications = subject, list(subject.notifications)
    elif isinstance(subject, Notification):
        event, notifications = subject.event, [subject]
    else:
        event, notifications = subject.notification.event, [subject.notification]
    deliveries = [
        d
        for n in notifications
        for d in n.deliveries
        if not isinstance(subject, Delivery) or d.id == subject.id
    ]
    return Trace(subject, event, notifications, {d.id: timeline(d) for d in deliveries})


def timeline(delivery: Delivery) -> list[Entry]:
    """Every status change and attempt of ``delivery``, oldest first."""
    entries = [Entry(delivery.created_at, "planned", "pending", "planned")]
    ordered: list[tuple[dt.datetime, int, Entry]] = []
    for a in delivery.attempts:
        detail = a.error_class and f"{a.error_class}: {a.error_message}"
        if a.provider_message_id:
            detail = f"provider id {a.provider_message_id}"
        entry = Entry(a.finished_at, "attempt", f"attempt {a.number}", a.outcome, detail)
        ordered.append((a.finished_at, 0, entry))
    for tr in delivery.transitions:
        entry = Entry(tr.created_at, "transition", tr.to_status, tr.reason, tr.detail)
        ordered.append((tr.created_at, 1, entry))
    ordered.sort(key=lambda item: (item[0], item[1]))
    return entries + [entry for _, _, entry in ordered]


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_trace(tr: Trace) -> str:
    """The text form of a :class:`Trace`."""
    event = tr.event
    head = f"{event.public_id}  {event.notifier_key} v{event.notifier_version}"
    lines = [head, f"  created    {_time(event.created_at)}"]
    if event.tenant:
        lines.append(f"  tenant     {event.tenant}")
    if event.idempotency_key:
        lines.append(f"  idempotency key  {event.idempotency_key}")
    if event.correlation_id:
        lines.append(f"  correlation id   {event.correlation_id}")
    lines.append(f"  params     {json.dumps(event.params, sort_keys=True)}")
    for n in tr.notifications:
        state = " ".join(
            f"{label} {_time(when)}"
            for label, when in (
                ("seen", n.seen_at),
                ("read", n.read_at),
                ("archived", n.archived_at),
            )
            if when is not None
        )
        lines.append(f"  {n.public_id}  to {n.recipient_id}" + (f"  ({state})" if state else ""))
        for d in n.deliveries:
            if d.id not in tr.timelines:
                continue
            lines.append(f"    {d.public_id}  {d.channel}  now {d.status} ({d.status_reason})")
            for e in tr.timelines[d.id]:
                text = f"      {_time(e.at)}  {e.status:<12} {e.reason}"
                if e.detail:
                    text += f"  [{e.detail}]"
                lines.append(text)
            if d.status == "failed" and d.next_attempt_at is not None:
                lines.append(f"      next attempt due {_time(d.next_attempt_at)}")
    return "\n".join(lines)
