"""Performing one delivery: claim it under a lease, call the channel, record the outcome."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm

from .channels import Message, SendResult
from .errors import DeliveryError
from .lifecycle import AttemptOutcome, DeliveryStatus, transition
from .models import Delivery, DeliveryAttempt, as_utc
from .settings import Settings

if t.TYPE_CHECKING:
    from .extension import State

logger = logging.getLogger(__name__)

#: Statuses a delivery can be claimed from.
CLAIMABLE = (DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A delivery a worker holds the lease on, with the message to send."""

    delivery_id: int
    attempt: int
    started_at: dt.datetime
    message: Message


def perform_delivery(
    delivery_id: int, *, engine: sa.Engine | None = None, now: dt.datetime | None = None
) -> DeliveryStatus | None:
    """Claim, send and record one delivery; the whole of a delivery job.

    Idempotent: returns ``None`` without sending when the delivery is gone, locked by
    another worker, already being sent, finished, or not yet due for a retry. Runs in the
    current app context with its own session, committing twice (the claim, the outcome).

    :param engine: the engine holding the rows (``db.engine`` by default).
    :param now: evaluate as of this time (tests and ``--now``).
    :return: the status the delivery ended in, or ``None`` when nothing was done.
    """
    from .extension import current_state

    state = current_state()
    engine = engine if engine is not None else state.chimeway.db.engine
    with sa_orm.Session(bind=engine, expire_on_commit=False) as session:
        claim = claim_delivery(session, state, delivery_id, now=now)
        session.commit()
        if claim is None:
            return None
        outcome: SendResult | BaseException | None
        try:
            outcome = send(state, claim.message)
        except Exception as exc:
            outcome = exc
        status = record_outcome(session, state.settings, claim, outcome)
        session.commit()
        if status is DeliveryStatus.FAILED and state.settings.dispatcher == "rq":
            from .queues import schedule_retry

            delivery = session.get(Delivery, delivery_id)
            if delivery is not None and delivery.next_attempt_at is not None:
                schedule_retry(state, delivery_id, claim.attempt + 1, delivery.next_attempt_at)
        return status


def claim_delivery(
    session: sa_orm.Session, state: State, delivery_id: int, *, now: dt.datetime | None = None
) -> Claim | None:
    """Lock the delivery, re-check it, and move it to ``sending`` under a lease.

    Flushes but does not commit. ``None`` when there is nothing to do.
    """
    now = as_utc(now)
    delivery = session.scalars(
        sa.select(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status.in_(CLAIMABLE))
        .with_for_update(skip_locked=True)
    ).first()
    if delivery is None:
        return None
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        return None
    notification = delivery.notification
    event = notification.event
    cancel_reason = None
    if event.notifier_key not in state.chimeway.notifiers:
        cancel_reason = "notifier_missing"
    elif delivery.channel not in state.channels:
        cancel_reason = "channel_missing"
    else:
        recipient = state.chimeway.load_recipient(notification.recipient_id)
        if recipient is None:
            cancel_reason = "recipient_missing"
    if cancel_reason is not None:
        transition(session, delivery, DeliveryStatus.CANCELLED, cancel_reason, now=now)
        session.flush()
        return None
    assert recipient is not None
    delivery.attempt_count += 1
    transition(session, delivery, DeliveryStatus.SENDING, "claimed", now=now)
    delivery.lease_expires_at = now + dt.timedelta(seconds=state.settings.lease_seconds)
    session.flush()
    message = Message(
        delivery_id=delivery.id,
        notification_id=notification.id,
        event_id=event.id,
        attempt=delivery.attempt_count,
        idempotency_key=f"chimeway-{delivery.id}-{delivery.attempt_count}",
        channel=delivery.channel,
        notifier_key=event.notifier_key,
        tenant=event.tenant or None,
        recipient=recipient,
        content=dict(delivery.content),
    )
    return Claim(delivery.id, delivery.attempt_count, now, message)


def send(state: State, message: Message) -> SendResult | None:
    """Hand ``message`` to its channel, or to the active test outboxes."""
    if state.outboxes:
        for outbox in state.outboxes:
            outbox.record(message)
        if any(outbox.fake for outbox in state.outboxes):
            return SendResult(provider_message_id="flask_chimeway.testing:fake")
    return state.channels[message.channel].send(message)


def record_outcome(
    session: sa_orm.Session,
    settings: Settings,
    claim: Claim,
    outcome: SendResult | BaseException | None,
    *,
    now: dt.datetime | None = None,
) -> DeliveryStatus | None:
    """Append the attempt and move the delivery to its next status. Flushes, no commit.

    ``None`` when the lease was lost meanwhile (the tick recorded the attempt as abandoned).
    """
    now = as_utc(now)
    delivery = session.scalars(
        sa.select(Delivery).where(Delivery.id == claim.delivery_id).with_for_update()
    ).one()
    if delivery.status != DeliveryStatus.SENDING or delivery.attempt_count != claim.attempt:
        logger.warning(
            "delivery %s attempt %s finished after its lease was taken over; its outcome"
            " is not recorded",
            claim.delivery_id,
            claim.attempt,
        )
        return None
    attempt = DeliveryAttempt(
        delivery_id=delivery.id,
        number=claim.attempt,
        started_at=claim.started_at,
        finished_at=now,
    )
    if not isinstance(outcome, BaseException):
        attempt.outcome = AttemptOutcome.SUCCEEDED.value
        attempt.provider_message_id = outcome.provider_message_id if outcome else None
        session.add(attempt)
        transition(session, delivery, DeliveryStatus.SUCCEEDED, "sent", now=now)
        return DeliveryStatus.SUCCEEDED
    attempt.error_class = f"{type(outcome).__module__}.{type(outcome).__qualname__}"
    attempt.error_message = str(outcome)[:2000]
    permanent = isinstance(outcome, DeliveryError) and not outcome.retryable
    attempt.outcome = (
        AttemptOutcome.PERMANENT_FAILURE if permanent else AttemptOutcome.TRANSIENT_FAILURE
    ).value
    session.add(attempt)
    logger.debug(
        "delivery %s attempt %s failed: %s", delivery.id, claim.attempt, attempt.error_class
    )
    if permanent:
        transition(
            session,
            delivery,
            DeliveryStatus.CANCELLED,
            "permanent_failure",
            detail=attempt.error_message,
            now=now,
        )
        return DeliveryStatus.CANCELLED
    return retry_or_give_up(session, settings, delivery, attempt.error_message, now=now)


def retry_or_give_up(
    session: sa_orm.Session,
    settings: Settings,
    delivery: Delivery,
    detail: str | None,
    *,
    now: dt.datetime,
    reason: str = "transient_failure",
    retry_at: dt.datetime | None = None,
) -> DeliveryStatus:
    """After a failed attempt: schedule the next one (at ``retry_at``, by default after the
    backoff), or cancel when no attempt is left."""
    if delivery.attempt_count >= settings.max_attempts:
        transition(
            session, delivery, DeliveryStatus.CANCELLED, "retries_exhausted", detail=detail, now=now
        )
        return DeliveryStatus.CANCELLED
    transition(session, delivery, DeliveryStatus.FAILED, reason, detail=detail, now=now)
    delivery.next_attempt_at = retry_at or now + backoff(settings, delivery.attempt_count)
    return DeliveryStatus.FAILED


def backoff(settings: Settings, attempts: int) -> dt.timedelta:
    """The wait before the next attempt after ``attempts`` failures: exponential, capped,
    with jitter over the upper half so retries of many deliveries spread out."""
    ceiling = min(settings.backoff_max, settings.backoff_base * 2 ** (attempts - 1))
    return dt.timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))
