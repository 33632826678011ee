"""Running workflows: start runs, advance them on delivery outcomes, signals and due
waits, stop them. Every function here works on rows its caller has locked."""

from __future__ import annotations

import datetime as dt
import logging
import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm

from ..lifecycle import DeliveryStatus, transition
from ..models import Delivery, Signal, WorkflowRun, WorkflowTransition, as_utc
from .dsl import NOTIFICATION

logger = logging.getLogger(__name__)

ACTIVE, WAITING, STOPPED, COMPLETED = "active", "waiting", "stopped", "completed"
LIVE_STATES = (ACTIVE, WAITING)
#: Delivery statuses a stopped run cancels.
CANCELLABLE = (
    DeliveryStatus.HELD.value,
    DeliveryStatus.PENDING.value,
    DeliveryStatus.FAILED.value,
)


class Advance:
    """What advancing runs did in one transaction: deliveries to dispatch and waits to
    schedule after the commit."""

    def __init__(self) -> None:
        self.activated: list[int] = []
        #: ``(run_id, step, due_at)`` of the waits started.
        self.waits: list[tuple[int, int, dt.datetime]] = []


def log(
    session: sa_orm.Session,
    run: WorkflowRun,
    reason: str,
    now: dt.datetime,
    detail: str | None = None,
) -> None:
    """Append a transition to ``run``'s log (the state is the run's state now)."""
    session.add(
        WorkflowTransition(
            run_id=run.id,
            step=run.current_step,
            state=run.state,
            reason=reason,
            detail=detail,
            created_at=now,
        )
    )
    logger.debug("run %s step %s: %s (%s)", run.id, run.current_step, reason, detail)


def steps(run: WorkflowRun) -> list[dict[str, t.Any]]:
    return t.cast(list[dict[str, t.Any]], run.definition["steps"])


def run_from(
    session: sa_orm.Session,
    run: WorkflowRun,
    index: int,
    now: dt.datetime,
    advance: Advance,
    find: t.Callable[[int, int], Delivery | None] | None = None,
) -> None:
    """Go on with ``run`` from step ``index``: activate a delivery, start a wait, or
    complete. Skips delivery steps that have no delivery (an escalation that found no
    recipient when triggered)."""
    definition = steps(run)
    while index < len(definition):
        step = definition[index]
        run.current_step = index
        run.updated_at = now
        if step["kind"] == "wait":
            run.state = WAITING
            run.due_at = now + dt.timedelta(seconds=step["seconds"])
            log(session, run, "waiting", now, f"until {_iso(run.due_at)}")
            earlier = _earlier_signal(session, run, step.get("stop_on", []))
            if earlier is not None:
                stop(
                    session,
                    run,
                    "stopped_by_signal",
                    f"{earlier.name} ({earlier.public_id}), tracked before the wait began",
                    now,
                )
                return
            advance.waits.append((run.id, index, run.due_at))
            return
        if find is not None:
            delivery = find(run.notification_id, index)
        else:
            delivery = session.scalars(
                sa.select(Delivery).where(
                    Delivery.notification_id == run.notification_id, Delivery.step == index
                )
            ).first()
        if delivery is None:
            run.state = ACTIVE
            log(
                session,
                run,
                "step_skipped",
                now,
                f"escalation on {step['channel']} ({step['to']}) found no recipient when"
                " the notifier was triggered",
            )
            index += 1
            continue
        run.state = ACTIVE
        run.due_at = None
        if delivery.status == DeliveryStatus.HELD:
            delivery.next_attempt_at = now
            transition(session, delivery, DeliveryStatus.PENDING, "step_activated", now=now)
            advance.activated.append(delivery.id)
        log(session, run, "step_activated", now, f"{step['channel']} delivery {delivery.id}")
        return
    run.state = COMPLETED
    run.due_at = None
    run.updated_at = now
    log(session, run, "completed", now)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _earlier_signal(
    session: sa_orm.Session, run: WorkflowRun, stop_on: list[dict[str, t.Any]]
) -> Signal | None:
    """A signal tracked since the run started that meets one of a wait's conditions: a
    message read while the step before the wait was still being retried stops the wait
    as soon as it begins."""
    if not stop_on:
        return None
    candidates = session.scalars(
        sa.select(Signal)
        .where(
            Signal.tenant == run.tenant,
            Signal.recipient_id == run.recipient_id,
            Signal.name.in_({c["signal"] for c in stop_on}),
            Signal.created_at >= run.created_at,
        )
        .order_by(Signal.id)
    ).all()
    for signal in candidates:
        if any(matches(run, c, signal) for c in stop_on):
            return signal
    return None


def stop(
    session: sa_orm.Session,
    run: WorkflowRun,
    reason: str,
    detail: str,
    now: dt.datetime,
) -> None:
    """Stop ``run`` and cancel the deliveries of its steps that were not sent."""
    run.state = STOPPED
    run.due_at = None
    run.updated_at = now
    log(session, run, reason, now, detail)
    pending = session.scalars(
        sa.select(Delivery).where(
            Delivery.notification_id == run.notification_id,
            Delivery.step.is_not(None),
            Delivery.status.in_(CANCELLABLE),
        )
    ).all()
    for delivery in pending:
        transition(
            session,
            delivery,
            DeliveryStatus.CANCELLED,
            "workflow_stopped",
            detail=f"run {run.id}: {detail}",
            now=now,
        )


def on_delivery_outcome(
    session: sa_orm.Session,
    run: WorkflowRun,
    delivery: Delivery,
    now: dt.datetime,
    advance: Advance,
) -> bool:
    """Advance ``run`` after the delivery of its current step finished. ``False`` when
    there is nothing to do (the run moved on, the delivery is not finished)."""
    if run.state != ACTIVE or run.current_step != delivery.step:
        return False
    if delivery.status == DeliveryStatus.SUCCEEDED:
        action = steps(run)[run.current_step]["on_success"]
    elif delivery.status in (DeliveryStatus.CANCELLED, DeliveryStatus.SUPPRESSED):
        action = steps(run)[run.current_step]["on_failure"]
    else:
        return False
    outcome = f"delivery {delivery.id} {delivery.status} ({delivery.status_reason})"
    if action == "stop":
        stop(session, run, "stopped_by_outcome", outcome, now)
        return True
    log(session, run, "step_finished", now, outcome)
    index = run.current_step + 1
    if action == "skip_waits":
        definition = steps(run)
        while index < len(definition) and definition[index]["kind"] == "wait":
            index += 1
    run_from(session, run, index, now, advance)
    return True


def on_wait_elapsed(
    session: sa_orm.Session,
    run: WorkflowRun,
    now: dt.datetime,
    advance: Advance,
    find: t.Callable[[int, int], Delivery | None] | None = None,
) -> bool:
    """Advance ``run`` past its wait when it is due. ``False`` when it is not."""
    if run.state != WAITING or run.due_at is None or as_utc(run.due_at) > now:
        return False
    log(session, run, "wait_elapsed", now)
    run_from(session, run, run.current_step + 1, now, advance, find=find)
    return True


def conditions(run: WorkflowRun) -> list[dict[str, t.Any]]:
    """The stop conditions that hold for ``run`` now."""
    found = list(run.definition.get("stop_on", []))
    if run.state == WAITING:
        found.extend(steps(run)[run.current_step].get("stop_on", []))
    return found


def matches(run: WorkflowRun, condition: t.Mapping[str, t.Any], signal: Signal) -> bool:
    if condition["signal"] != signal.name:
        return False
    for field, source in condition["match"].items():
        expected = run.notification_id if source == NOTIFICATION else run.match_values.get(source)
        if expected is None or signal.data.get(field) is None:
            return False  # a run without the value cannot be the signal's subject
        if str(signal.data[field]) != str(expected):
            return False
    return True


def route(session: sa_orm.Session, signal: Signal, now: dt.datetime) -> str:
    """Stop the live runs of the signal's recipient whose conditions it meets; record and
    return what it did, in words an operator can read."""
    runs = session.scalars(
        sa.select(WorkflowRun)
        .where(
            WorkflowRun.tenant == signal.tenant,
            WorkflowRun.recipient_id == signal.recipient_id,
            WorkflowRun.state.in_(LIVE_STATES),
        )
        .order_by(WorkflowRun.id)
        .with_for_update()
    ).all()
    waiting_for_name = [r for r in runs if any(c["signal"] == signal.name for c in conditions(r))]
    stopped = []
    for run in waiting_for_name:
        condition = next((c for c in conditions(run) if matches(run, c, signal)), None)
        if condition is None:
            continue
        stop(session, run, "stopped_by_signal", f"{signal.name} ({signal.public_id})", now)
        stopped.append(run.public_id)
    if stopped:
        outcome = f"stopped {', '.join(stopped)}"
    elif not runs:
        outcome = "matched nothing: the recipient has no active or waiting workflow run"
    elif not waiting_for_name:
        outcome = (
            f"matched nothing: {len(runs)} live run(s) of the recipient, none stops on"
            f" {signal.name!r} at its current step"
        )
    else:
        outcome = (
            f"matched nothing: {len(waiting_for_name)} run(s) stop on {signal.name!r}, but"
            f" the signal's data {signal.data!r} is about another subject"
        )
    signal.routed_at = now
    signal.outcome = outcome
    return outcome
