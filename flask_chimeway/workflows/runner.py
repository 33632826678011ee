"""The units of work that move runs, each in its own transaction with the rows locked:
used by the dispatchers, the jobs and the tick."""

from __future__ import annotations

import datetime as dt
import logging
import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm

from .. import dispatch
from ..lifecycle import DeliveryStatus
from ..models import Delivery, Signal, WorkflowRun, as_utc
from . import engine

logger = logging.getLogger(__name__)

FINISHED = (
    DeliveryStatus.SUCCEEDED.value,
    DeliveryStatus.CANCELLED.value,
    DeliveryStatus.SUPPRESSED.value,
)


def _session(bind: sa.Engine) -> sa_orm.Session:
    return sa_orm.Session(bind=bind, expire_on_commit=False)


def _orphaned(session: sa_orm.Session, run: WorkflowRun, now: dt.datetime) -> bool:
    """Stop ``run`` when its notifier is no longer in the code; ``True`` if it was."""
    from ..extension import current_state

    if run.notifier_key in current_state().chimeway.notifiers:
        return False
    engine.stop(
        session,
        run,
        "notifier_missing",
        f"no notifier {run.notifier_key!r} is registered any more; deploy it again (the"
        " run kept its steps) or let the run end here",
        now,
    )
    return True


def _finish(session: sa_orm.Session, advance: engine.Advance) -> None:
    """Commit; the deliveries the runs activated are dispatched, and the waits they
    started scheduled (``rq``), after the commit."""
    session.flush()
    dispatch.stage(session, advance.activated)
    dispatch.stage(session, advance.waits, kind="wait")
    session.commit()


def advance_run(bind: sa.Engine, run_id: int, now: dt.datetime | None = None) -> bool:
    """Move one run past its wait if the wait is over (the job RQ's scheduler enqueues at
    the wait's end). ``False`` when there was nothing to do."""
    now = as_utc(now)
    with _session(bind) as session:
        run = session.scalars(
            sa.select(WorkflowRun).where(WorkflowRun.id == run_id).with_for_update()
        ).first()
        if run is None:
            return False
        advance = engine.Advance()
        moved = _orphaned(session, run, now) or engine.on_wait_elapsed(session, run, now, advance)
        _finish(session, advance)
        return moved


def after_deliveries(
    bind: sa.Engine, delivery_ids: t.Iterable[int], now: dt.datetime | None
) -> int:
    """Advance the runs whose current step's delivery is among ``delivery_ids`` and has
    finished. Returns how many runs moved."""
    moved = 0
    for delivery_id in delivery_ids:
        with _session(bind) as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None or delivery.step is None or delivery.status not in FINISHED:
                continue
            run = session.scalars(
                sa.select(WorkflowRun)
                .where(WorkflowRun.notification_id == delivery.notification_id)
                .with_for_update()
            ).first()
            if run is None:
                continue
            advance = engine.Advance()
            if _orphaned(session, run, as_utc(now)) or engine.on_delivery_outcome(
                session, run, delivery, as_utc(now), advance
            ):
                moved += 1
            _finish(session, advance)
    return moved


def route_signal(bind: sa.Engine, signal_id: int, now: dt.datetime | None = None) -> str | None:
    """Route one stored signal; ``None`` when it was routed already (or is locked)."""
    with _session(bind) as session:
        signal = session.scalars(
            sa.select(Signal)
            .where(Signal.id == signal_id, Signal.routed_at.is_(None))
            .with_for_update(skip_locked=True)
        ).first()
        if signal is None:
            return None
        outcome = engine.route(session, signal, as_utc(now))
        _finish(session, engine.Advance())
        logger.debug("signal %s: %s", signal_id, outcome)
        return outcome


def advance_due(bind: sa.Engine, now: dt.datetime, limit: int) -> int:
    """Move every waiting run whose wait is over, in batches of ``limit`` locked rows."""
    moved = 0
    with _session(bind) as session:
        while True:
            runs = session.scalars(
                sa.select(WorkflowRun)
                .where(WorkflowRun.state == engine.WAITING, WorkflowRun.due_at <= now)
                .order_by(WorkflowRun.due_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            advance = engine.Advance()
            find = _step_deliveries(session, runs)
            with session.no_autoflush:
                for run in runs:
                    if _orphaned(session, run, now) or engine.on_wait_elapsed(
                        session, run, now, advance, find=find
                    ):
                        moved += 1
            _finish(session, advance)
            if len(runs) < limit:
                return moved


def _step_deliveries(
    session: sa_orm.Session, runs: t.Sequence[WorkflowRun]
) -> t.Callable[[int, int], Delivery | None]:
    """The step deliveries of ``runs``' notifications, in one query, as a lookup."""
    rows = session.scalars(
        sa.select(Delivery).where(
            Delivery.notification_id.in_([r.notification_id for r in runs]),
            Delivery.step.is_not(None),
        )
    ).all()
    by_step = {(d.notification_id, d.step): d for d in rows}
    return lambda notification_id, step: by_step.get((notification_id, step))


def advance_stalled(bind: sa.Engine, now: dt.datetime, limit: int, grace: float = 30) -> int:
    """The safety net for (a): active runs whose current delivery finished but that did
    not move (the process died in between, or the delivery was cancelled by the tick).

    Only runs that have not moved for ``grace`` seconds are looked at, through the
    ``(state, updated_at)`` index: the normal path moves a run within a second of its
    delivery's outcome, so the tick's cost follows the stalled runs, not those in flight.
    """
    cutoff = now - dt.timedelta(seconds=grace)
    moved = 0
    after: tuple[dt.datetime, int] | None = None
    with _session(bind) as session:
        while True:
            query = (
                sa.select(WorkflowRun)
                .where(WorkflowRun.state == engine.ACTIVE, WorkflowRun.updated_at <= cutoff)
                .order_by(WorkflowRun.updated_at, WorkflowRun.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            if after is not None:
                query = query.where(
                    sa.tuple_(WorkflowRun.updated_at, WorkflowRun.id) > sa.tuple_(*after)
                )
            runs = session.scalars(query).all()
            find = _step_deliveries(session, runs)
            advance = engine.Advance()
            with session.no_autoflush:
                for run in runs:
                    delivery = find(run.notification_id, run.current_step)
                    if delivery is None or delivery.status not in FINISHED:
                        continue
                    if _orphaned(session, run, now) or engine.on_delivery_outcome(
                        session, run, delivery, now, advance
                    ):
                        moved += 1
            if runs:
                after = (runs[-1].updated_at, runs[-1].id)
            _finish(session, advance)
            if len(runs) < limit:
                return moved


def route_unrouted(bind: sa.Engine, before: dt.datetime, limit: int) -> int:
    """Route signals whose routing job never ran (Redis was down, the job was lost)."""
    with _session(bind) as session:
        ids = session.scalars(
            sa.select(Signal.id)
            .where(Signal.routed_at.is_(None), Signal.created_at <= before)
            .order_by(Signal.id)
            .limit(limit)
        ).all()
    return sum(route_signal(bind, signal_id) is not None for signal_id in ids)
