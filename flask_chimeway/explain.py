"""Explain: the timeline of an event, notification or delivery, with every reason."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm

from .errors import TraceNotFoundError
from .models import Delivery, DeliveryAttempt, Event, Notification, Signal, WorkflowRun

Traceable: t.TypeAlias = Event | Notification | Delivery | WorkflowRun | Signal

PREFIXES: dict[str, type[Traceable]] = {
    "evt": Event,
    "ntf": Notification,
    "dlv": Delivery,
    "run": WorkflowRun,
    "sig": Signal,
}


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
    event: Event | None
    notifications: list[Notification]
    timelines: dict[int, list[Entry]]
    #: The workflow run of each notification that has one, by notification id.
    runs: dict[int, WorkflowRun] = dataclasses.field(default_factory=dict)

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
            f"{text!r} is not an id Chimeway can trace; pass evt_<id>, ntf_<id>, dlv_<id>,"
            " run_<id> or sig_<id>."
        )
    kinds = [PREFIXES[prefix]] if prefix else list(PREFIXES.values())
    found: list[Traceable] = []
    for kind in kinds:
        row = session.get(kind, int(number))
        if row is not None:
            found.append(t.cast(Traceable, row))
    if not found:
        raise TraceNotFoundError(
            f"No event, notification, delivery, run or signal matches {text!r}."
        )
    if len(found) > 1:
        names = ", ".join(row.public_id for row in found)
        raise TraceNotFoundError(f"{text!r} is ambiguous ({names} exist); pass one of those.")
    return found[0]


def trace(session: sa_orm.Session, ref: str | int | Traceable) -> Trace:
    """Explain an event, notification, delivery, workflow run or signal (an object or an
    id such as ``evt_12``, ``run_3``, ``sig_9``; see :func:`resolve`)."""
    subject = ref if isinstance(ref, Traceable) else resolve(session, ref)
    if isinstance(subject, Signal):
        return Trace(subject, None, [], {})
    if isinstance(subject, Event):
        event, notifications = subject, list(subject.notifications)
    elif isinstance(subject, Notification):
        event, notifications = subject.event, [subject]
    elif isinstance(subject, WorkflowRun):
        event, notifications = subject.notification.event, [subject.notification]
    else:
        event, notifications = subject.notification.event, [subject.notification]
    deliveries = [
        d
        for n in notifications
        for d in n.deliveries
        if not isinstance(subject, Delivery) or d.id == subject.id
    ]
    runs = {
        run.notification_id: run
        for run in session.scalars(
            sa.select(WorkflowRun).where(
                WorkflowRun.notification_id.in_([n.id for n in notifications])
            )
        )
    }
    return Trace(subject, event, notifications, {d.id: timeline(d) for d in deliveries}, runs)


def timeline(delivery: Delivery) -> list[Entry]:
    """Every status change and attempt of ``delivery``, in the order they happened: each
    attempt just before the status change that recorded its outcome."""
    if delivery.step is None:
        entries = [Entry(delivery.created_at, "planned", "pending", "planned")]
    else:
        detail = f"until its workflow reaches step {delivery.step}"
        entries = [Entry(delivery.created_at, "planned", "held", "held", detail)]
    attempts = iter(delivery.attempts)
    for tr in delivery.transitions:
        if tr.from_status == "sending":
            a = next(attempts, None)
            if a is not None:
                entries.append(_attempt_entry(a))
        entries.append(Entry(tr.created_at, "transition", tr.to_status, tr.reason, tr.detail))
    entries.extend(_attempt_entry(a) for a in attempts)
    return entries


def _attempt_entry(a: DeliveryAttempt) -> Entry:
    detail = a.error_class and f"{a.error_class}: {a.error_message}"
    if a.provider_message_id:
        detail = f"provider id {a.provider_message_id}"
    return Entry(a.finished_at, "attempt", f"attempt {a.number}", a.outcome, detail)


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_trace(tr: Trace) -> str:
    """The text form of a :class:`Trace`."""
    if isinstance(tr.subject, Signal):
        return _format_signal(tr.subject)
    event = tr.event
    assert event is not None
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
        run = tr.runs.get(n.id)
        if run is not None:
            lines.append(
                f"    {run.public_id}  workflow v{run.notifier_version}  now {run.state}"
                f" at step {run.current_step}"
                + (f", due {_time(run.due_at)}" if run.due_at is not None else "")
            )
            for tr_ in run.transitions:
                text = f"      {_time(tr_.created_at)}  step {tr_.step:<3} {tr_.reason}"
                if tr_.detail:
                    text += f"  [{tr_.detail}]"
                lines.append(text)
        for d in n.deliveries:
            if d.id not in tr.timelines:
                continue
            step = "" if d.step is None else f"step {d.step} "
            to = "" if d.recipient_id is None else f" to {d.recipient_id}"
            lines.append(
                f"    {d.public_id}  {step}{d.channel}{to}  now {d.status} ({d.status_reason})"
            )
            for e in tr.timelines[d.id]:
                text = f"      {_time(e.at)}  {e.status:<12} {e.reason}"
                if e.detail:
                    text += f"  [{e.detail}]"
                lines.append(text)
            if d.status == "failed" and d.next_attempt_at is not None:
                lines.append(f"      next attempt due {_time(d.next_attempt_at)}")
    return "\n".join(lines)


def _format_signal(signal: Signal) -> str:
    lines = [
        f"{signal.public_id}  {signal.name} for {signal.recipient_id}"
        + (f" in tenant {signal.tenant}" if signal.tenant else ""),
        f"  tracked    {_time(signal.created_at)}",
        f"  data       {json.dumps(signal.data, sort_keys=True)}",
    ]
    if signal.routed_at is None:
        lines.append("  not routed yet (the next tick routes it)")
    else:
        lines.append(f"  routed     {_time(signal.routed_at)}: {signal.outcome}")
    return "\n".join(lines)
