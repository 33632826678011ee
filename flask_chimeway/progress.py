"""The progression tick for deliveries: expire stale leases, then perform (``sync``) or
enqueue (``rq``) what is due."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm

from .delivery import BATCH_SIZE, perform_deliveries, retry_or_give_up
from .errors import WorkflowDefinitionError
from .extension import State, current_state
from .lifecycle import AttemptOutcome, DeliveryStatus
from .models import Delivery, DeliveryAttempt, as_utc
from .workflows import runner
from .workflows.start import check_definitions

logger = logging.getLogger(__name__)

DUE_STATUSES = (DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value)


@dataclasses.dataclass
class TickReport:
    """What one tick did."""

    abandoned: int = 0
    performed: int = 0
    enqueued: int = 0
    runs_advanced: int = 0
    signals_routed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.runs_advanced} workflow run(s) advanced, {self.signals_routed} signal(s)"
            f" routed, {self.abandoned} stale lease(s) expired, {self.performed}"
            f" delivery(ies) performed, {self.enqueued} delivery job(s) enqueued"
        )


def progress(*, now: dt.datetime | None = None, batch_size: int = 500) -> TickReport:
    """Run one tick in the current app. Safe to run in several processes at once: every
    step locks the rows it works on with ``FOR UPDATE SKIP LOCKED`` (on PostgreSQL) and
    re-checks them.

    0. Signals whose routing never happened are routed; waiting workflow runs whose wait
       is over move on (activating their next delivery); active runs whose current
       delivery finished without moving them move on.
    1. Deliveries stuck in ``sending`` past their lease get an ``abandoned`` attempt and
       are due again at once (or cancelled when no attempt is left); with ``rq`` their
       next job is enqueued right away.
    2. Due deliveries (``pending``, or ``failed`` with the retry time passed) are performed
       in-process with the ``sync`` dispatcher. With ``rq`` they are enqueued when they
       have been due for ``CHIMEWAY_REQUEUE_AFTER`` seconds and no live job exists for
       them: never enqueued (Redis was down at commit), lost (Redis was flushed), or a
       retry the scheduler did not move.

    :param now: evaluate as of this time instead of the clock.
    :param batch_size: rows per query; the tick loops until nothing is left.
    """
    state = current_state()
    engine = state.chimeway.db.engine
    now = as_utc(now)
    report = TickReport()
    with sa_orm.Session(bind=engine, expire_on_commit=False) as session:
        try:
            check_definitions(session, state)
            session.commit()
        except WorkflowDefinitionError:
            # runs follow the steps stored on them; only new triggers of that notifier fail
            logger.exception("chimeway tick: a workflow changed under a used version")
    requeue_cutoff = now - dt.timedelta(seconds=state.settings.requeue_after)
    report.signals_routed = runner.route_unrouted(engine, requeue_cutoff, batch_size)
    report.runs_advanced = runner.advance_due(engine, now, batch_size)
    report.runs_advanced += runner.advance_stalled(
        engine, now, batch_size, grace=state.settings.requeue_after
    )
    with sa_orm.Session(bind=engine, expire_on_commit=False) as session:
        retry = _expire_leases(session, state, now, batch_size)
        report.abandoned = len(retry)
        if state.settings.dispatcher == "rq":
            from .queues import enqueue_deliveries

            if retry and enqueue_deliveries(state, retry):
                report.enqueued += len(retry)
            report.enqueued += _enqueue_due(session, state, now, batch_size)
        else:
            report.performed = _perform_due(session, engine, now, batch_size)
    if any(dataclasses.astuple(report)):
        logger.info("chimeway tick: %s", report)
    return report


def _expire_leases(
    session: sa_orm.Session, state: State, now: dt.datetime, limit: int
) -> list[tuple[int, int]]:
    """Record abandoned attempts; the ``(delivery_id, next attempt)`` due again now."""
    retry: list[tuple[int, int]] = []
    while True:
        stale = session.scalars(
            sa.select(Delivery)
            .where(
                Delivery.status == DeliveryStatus.SENDING.value,
                Delivery.lease_expires_at <= now,
            )
            .order_by(Delivery.lease_expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for delivery in stale:
            session.add(
                DeliveryAttempt(
                    delivery_id=delivery.id,
                    number=delivery.attempt_count,
                    outcome=AttemptOutcome.ABANDONED.value,
                    started_at=delivery.updated_at,
                    finished_at=now,
                    error_message="the lease expired before the channel call finished",
                )
            )
            status = retry_or_give_up(
                session,
                state.settings,
                delivery,
                None,
                now=now,
                reason="lease_expired",
                retry_at=now,
            )
            if status is DeliveryStatus.FAILED:
                retry.append((delivery.id, delivery.attempt_count + 1))
        session.commit()
        if len(stale) < limit:
            return retry


def _due(now: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.and_(Delivery.status.in_(DUE_STATUSES), Delivery.next_attempt_at <= now)


def _perform_due(session: sa_orm.Session, engine: sa.Engine, now: dt.datetime, limit: int) -> int:
    performed = 0
    after_id = 0
    while True:
        due = session.scalars(
            sa.select(Delivery.id)
            .where(_due(now), Delivery.id > after_id)
            .order_by(Delivery.id)
            .limit(limit)
        ).all()
        session.rollback()
        for start in range(0, len(due), BATCH_SIZE):
            batch = list(due[start : start + BATCH_SIZE])
            try:
                performed += len(perform_deliveries(batch, engine=engine, now=now))
            except Exception:  # one broken batch must not stop the tick for the others
                logger.exception("chimeway tick: deliveries %s could not be performed", batch)
        if len(due) < limit:
            return performed
        after_id = due[-1]


def _enqueue_due(session: sa_orm.Session, state: State, now: dt.datetime, limit: int) -> int:
    from .queues import delivery_job_id, enqueue_deliveries, live_job_ids

    cutoff = now - dt.timedelta(seconds=state.settings.requeue_after)
    enqueued = 0
    after_id = 0
    while True:
        # The row locks keep concurrent ticks on disjoint rows until the jobs are pushed.
        rows = session.execute(
            sa.select(Delivery.id, Delivery.attempt_count)
            .where(_due(cutoff), Delivery.id > after_id)
            .order_by(Delivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        wanted = {delivery_job_id(i, n + 1): (i, n + 1) for i, n in rows}
        live = live_job_ids(state, list(wanted))
        if live is None:  # Redis is down: try again on the next tick
            session.rollback()
            return enqueued
        missing = [item for job_id, item in wanted.items() if job_id not in live]
        if missing and enqueue_deliveries(state, missing):
            enqueued += len(missing)
        session.rollback()
        if len(rows) < limit:
            return enqueued
        after_id = rows[-1][0]
