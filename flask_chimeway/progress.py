"""The progression tick for deliveries: expire stale leases, perform what is due."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm

from .delivery import perform_delivery, retry_or_give_up
from .extension import current_state
from .lifecycle import AttemptOutcome, DeliveryStatus
from .models import Delivery, DeliveryAttempt, as_utc

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TickReport:
    """What one tick did."""

    abandoned: int = 0
    performed: int = 0

    def __str__(self) -> str:
        return f"{self.abandoned} stale lease(s) expired, {self.performed} delivery(ies) performed"


def progress(*, now: dt.datetime | None = None, batch_size: int = 500) -> TickReport:
    """Run one tick in the current app: safe to run in several processes at once.

    1. Deliveries stuck in ``sending`` past their lease get an ``abandoned`` attempt and are
       retried (or cancelled when no attempt is left).
    2. Deliveries that are ``pending``, or ``failed`` with a retry due, are performed.

    :param now: evaluate as of this time instead of the clock.
    :param batch_size: rows locked per query; the tick loops until nothing is due.
    """
    state = current_state()
    engine = state.chimeway.db.engine
    now = as_utc(now)
    report = TickReport()
    with sa_orm.Session(bind=engine, expire_on_commit=False) as session:
        while True:
            stale = session.scalars(
                sa.select(Delivery)
                .where(
                    Delivery.status == DeliveryStatus.SENDING.value,
                    Delivery.lease_expires_at <= now,
                )
                .order_by(Delivery.lease_expires_at)
                .limit(batch_size)
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
                retry_or_give_up(
                    session,
                    state.settings,
                    delivery,
                    None,
                    now=now,
                    reason="lease_expired",
                    retry_at=now,
                )
            session.commit()
            report.abandoned += len(stale)
            if len(stale) < batch_size:
                break
        after_id = 0
        while True:
            due = session.scalars(
                sa.select(Delivery.id)
                .where(
                    Delivery.id > after_id,
                    sa.or_(
                        Delivery.status == DeliveryStatus.PENDING.value,
                        sa.and_(
                            Delivery.status == DeliveryStatus.FAILED.value,
                            Delivery.next_attempt_at <= now,
                        ),
                    ),
                )
                .order_by(Delivery.id)
                .limit(batch_size)
            ).all()
            session.rollback()
            for delivery_id in due:
                if perform_delivery(delivery_id, engine=engine, now=now) is not None:
                    report.performed += 1
            if len(due) < batch_size:
                break
            after_id = due[-1]
    if report.abandoned or report.performed:
        logger.info("chimeway tick: %s", report)
    return report
