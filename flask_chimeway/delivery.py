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
from .models import Delivery, DeliveryAttempt, Notification, as_utc
from .recipients import Recipient
from .settings import Settings

if t.TYPE_CHECKING:
    from .extension import State

logger = logging.getLogger(__name__)

#: How many deliveries one claim transaction takes at most (sync dispatch and the tick):
#: enough to save most round trips, few enough that leases do not run out mid-batch.
BATCH_SIZE = 100

#: Statuses a delivery can be claimed from.
CLAIMABLE = (DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A delivery a worker holds the lease on, with the message to send."""

    delivery_id: int
    attempt: int
    started_at: dt.datetime
    message: Message
    #: Whether the delivery is a workflow step (its run moves when it finishes).
    workflow_step: bool = False


def perform_delivery(
    delivery_id: int,
    *,
    attempt: int | None = None,
    engine: sa.Engine | None = None,
    now: dt.datetime | None = None,
) -> DeliveryStatus | None:
    """Claim, send and record one delivery; the whole of a delivery job.

    Idempotent: returns ``None`` without sending when the delivery is gone, locked by
    another worker, already being sent, finished, or not due. Runs in the current app
    context with its own session, committing twice (the claim, then the outcome).

    :param attempt: the attempt number a job was enqueued for. The delivery is claimed
        only if that attempt has not happened yet, whatever the clock says, so a duplicate
        job does nothing and a worker whose clock lags still sends a new delivery. Without
        it, the delivery is claimed when its ``next_attempt_at`` has come.
    :param engine: the engine holding the rows (``db.engine`` by default).
    :param now: evaluate as of this time (tests and ``--now``).
    :return: the status the delivery ended in, or ``None`` when nothing was done.
    """
    attempts = None if attempt is None else {delivery_id: attempt}
    return perform_deliveries([delivery_id], attempts=attempts, engine=engine, now=now).get(
        delivery_id
    )


def perform_deliveries(
    delivery_ids: t.Sequence[int],
    *,
    attempts: t.Mapping[int, int] | None = None,
    engine: sa.Engine | None = None,
    now: dt.datetime | None = None,
) -> dict[int, DeliveryStatus]:
    """:func:`perform_delivery` for several deliveries at once: one transaction claims
    them all, the channels are called one after the other, one transaction records every
    outcome. The sync dispatcher and the tick use it for what one commit planned.

    :return: the status each performed delivery ended in; the others are left out.
    """
    from .extension import current_state

    state = current_state()
    engine = engine if engine is not None else state.chimeway.db.engine
    now = as_utc(now) if now is not None else None
    with sa_orm.Session(bind=engine, expire_on_commit=False) as session:
        failed: list[int] = []
        try:
            claims = claim_deliveries(
                session, state, delivery_ids, attempts=attempts, now=now, failed=failed
            )
            session.commit()
        except sa_orm.exc.StaleDataError:
            # another process claimed one between our read and our write (SQLite has no
            # row locks; the version column catches it): go one by one
            session.rollback()
            if len(delivery_ids) == 1:
                return {}
            statuses: dict[int, DeliveryStatus] = {}
            for delivery_id in delivery_ids:
                statuses.update(
                    perform_deliveries([delivery_id], attempts=attempts, engine=engine, now=now)
                )
            return statuses
        results: list[tuple[Claim, SendResult | BaseException | None]] = []
        for claim in claims:
            try:
                results.append((claim, send(state, claim.message)))
            except Exception as exc:
                results.append((claim, exc))
        statuses = _record_all(session, state.settings, results, now)
        if state.settings.dispatcher == "rq":
            retries = {**dict.fromkeys(failed, DeliveryStatus.FAILED), **statuses}
            _schedule_retries(session, state, retries)
    finished = [
        claim.delivery_id
        for claim in claims
        if claim.workflow_step and statuses.get(claim.delivery_id, DeliveryStatus.FAILED).terminal
    ]
    if finished:
        from .workflows.runner import after_deliveries

        after_deliveries(engine, finished, now)
    return statuses


def _record_all(
    session: sa_orm.Session,
    settings: Settings,
    results: list[tuple[Claim, SendResult | BaseException | None]],
    now: dt.datetime | None,
) -> dict[int, DeliveryStatus]:
    statuses: dict[int, DeliveryStatus] = {}
    try:
        statuses = record_outcomes(session, settings, results, now=now)
        session.commit()
        return statuses
    except sa_orm.exc.StaleDataError:
        session.rollback()
    for claim, outcome in results:  # one changed meanwhile: record the others one by one
        try:
            statuses.update(record_outcomes(session, settings, [(claim, outcome)], now=now))
            session.commit()
        except sa_orm.exc.StaleDataError:
            session.rollback()
            logger.warning(
                "delivery %s attempt %s: the outcome could not be recorded because the"
                " delivery changed meanwhile (its lease was taken over)",
                claim.delivery_id,
                claim.attempt,
            )
    return statuses


def _schedule_retries(
    session: sa_orm.Session, state: State, statuses: t.Mapping[int, DeliveryStatus]
) -> None:
    from .queues import schedule_retry

    for delivery_id, status in statuses.items():
        if status is not DeliveryStatus.FAILED:
            continue
        delivery = session.get(Delivery, delivery_id)
        if delivery is not None and delivery.next_attempt_at is not None:
            schedule_retry(state, delivery_id, delivery.attempt_count + 1, delivery.next_attempt_at)


def claim_delivery(
    session: sa_orm.Session,
    state: State,
    delivery_id: int,
    *,
    attempt: int | None = None,
    now: dt.datetime | None = None,
) -> Claim | None:
    """Lock the delivery, re-check it, and move it to ``sending`` under a lease.

    Flushes but does not commit. ``None`` when there is nothing to do. See
    :func:`perform_delivery` for ``attempt``.
    """
    attempts = None if attempt is None else {delivery_id: attempt}
    claims = claim_deliveries(session, state, [delivery_id], attempts=attempts, now=now)
    return claims[0] if claims else None


def claim_deliveries(
    session: sa_orm.Session,
    state: State,
    delivery_ids: t.Sequence[int],
    *,
    attempts: t.Mapping[int, int] | None = None,
    now: dt.datetime | None = None,
    failed: list[int] | None = None,
) -> list[Claim]:
    """:func:`claim_delivery` for several deliveries, with one locking SELECT. Deliveries
    that failed before their channel was called (a recipient loader that raised) are
    appended to ``failed``."""
    now = as_utc(now)
    rows = session.scalars(
        sa.select(Delivery)
        .where(Delivery.id.in_(delivery_ids), Delivery.status.in_(CLAIMABLE))
        .options(
            sa_orm.joinedload(Delivery.notification, innerjoin=True).joinedload(
                Notification.event, innerjoin=True
            )
        )
        .order_by(Delivery.id)
        # A job names its attempt and waits for a lock held elsewhere (a tick checking the
        # row), since skipping would waste the job; batches skip rows someone else holds.
        .with_for_update(skip_locked=attempts is None, of=Delivery)
    ).all()
    claims = [
        claim
        for delivery in rows
        if (
            claim := _claim(
                session, state, delivery, (attempts or {}).get(delivery.id), now, failed
            )
        )
    ]
    session.flush()
    return claims


def _claim(
    session: sa_orm.Session,
    state: State,
    delivery: Delivery,
    attempt: int | None,
    now: dt.datetime,
    failed: list[int] | None = None,
) -> Claim | None:
    if attempt is not None:
        if delivery.attempt_count != attempt - 1:
            return None
    elif delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        return None
    notification = delivery.notification
    event = notification.event
    cancel_reason = None
    recipient: Recipient | None = None
    if event.notifier_key not in state.chimeway.notifiers:
        cancel_reason = "notifier_missing"
    elif delivery.channel not in state.channels:
        cancel_reason = "channel_missing"
    elif delivery.recipient_data is not None:  # an escalation's target
        recipient = Recipient(**delivery.recipient_data)
    elif notification.recipient_data is not None:
        recipient = Recipient(**notification.recipient_data)
    else:
        try:
            recipient = state.chimeway.load_recipient(notification.recipient_id)
        except Exception as exc:
            # the loader failed (its database, its service): an attempt that failed
            logger.warning(
                "delivery %s: the recipient loader raised %s", delivery.id, type(exc).__name__
            )
            delivery.attempt_count += 1
            transition(session, delivery, DeliveryStatus.SENDING, "claimed", now=now)
            failed_attempt = _attempt(delivery, now, now, exc)
            session.add(failed_attempt)
            detail = f"recipient loader: {exc}"[:2000]
            if failed_attempt.outcome == AttemptOutcome.PERMANENT_FAILURE:
                transition(
                    session,
                    delivery,
                    DeliveryStatus.CANCELLED,
                    "permanent_failure",
                    detail=detail,
                    now=now,
                )
            elif (
                retry_or_give_up(
                    session,
                    state.settings,
                    delivery,
                    detail,
                    now=now,
                    reason="recipient_loader_failed",
                )
                is DeliveryStatus.FAILED
                and failed is not None
            ):
                failed.append(delivery.id)
            return None
        if recipient is None:
            cancel_reason = "recipient_missing"
    if cancel_reason is not None or recipient is None:
        transition(
            session,
            delivery,
            DeliveryStatus.CANCELLED,
            cancel_reason or "recipient_missing",
            now=now,
        )
        return None
    delivery.attempt_count += 1
    transition(session, delivery, DeliveryStatus.SENDING, "claimed", now=now)
    delivery.lease_expires_at = now + dt.timedelta(seconds=state.settings.lease_seconds)
    message = Message(
        delivery_id=delivery.id,
        notification_id=notification.id,
        event_id=event.id,
        attempt=delivery.attempt_count,
        idempotency_key=f"chimeway-delivery-{delivery.id}",
        channel=delivery.channel,
        notifier_key=event.notifier_key,
        tenant=event.tenant or None,
        recipient=recipient,
        content=dict(delivery.content),
    )
    return Claim(delivery.id, delivery.attempt_count, now, message, delivery.step is not None)


def send(state: State, message: Message) -> SendResult | None:
    """Hand ``message`` to its channel, or to the active test outboxes."""
    if state.outboxes:
        for outbox in state.outboxes:
            outbox.record(message)
        if any(outbox.fake for outbox in state.outboxes):
            return SendResult(provider_message_id="flask_chimeway.testing:fake")
    return state.channels[message.channel].send(message)


def record_outcomes(
    session: sa_orm.Session,
    settings: Settings,
    results: t.Sequence[tuple[Claim, SendResult | BaseException | None]],
    *,
    now: dt.datetime | None = None,
) -> dict[int, DeliveryStatus]:
    """Append each attempt and move each delivery to its next status. Flushes, no commit.

    A delivery whose lease was lost meanwhile (the tick recorded the attempt as
    abandoned) is left out of the result.
    """
    now = as_utc(now)
    ids = [claim.delivery_id for claim, _ in results]
    rows = {
        d.id: d
        for d in session.scalars(sa.select(Delivery).where(Delivery.id.in_(ids)).with_for_update())
    }
    statuses: dict[int, DeliveryStatus] = {}
    for claim, outcome in results:
        delivery = rows.get(claim.delivery_id)
        status = (
            None if delivery is None else _record(session, settings, delivery, claim, outcome, now)
        )
        if status is not None:
            statuses[claim.delivery_id] = status
    session.flush()
    return statuses


def _record(
    session: sa_orm.Session,
    settings: Settings,
    delivery: Delivery,
    claim: Claim,
    outcome: SendResult | BaseException | None,
    now: dt.datetime,
) -> DeliveryStatus | None:
    if delivery.status != DeliveryStatus.SENDING or delivery.attempt_count != claim.attempt:
        logger.warning(
            "delivery %s attempt %s finished after its lease was taken over; its outcome"
            " is not recorded",
            claim.delivery_id,
            claim.attempt,
        )
        return None
    error = outcome if isinstance(outcome, BaseException) else None
    attempt = _attempt(delivery, claim.started_at, now, error, number=claim.attempt)
    session.add(attempt)
    if error is None:
        if isinstance(outcome, SendResult):
            attempt.provider_message_id = outcome.provider_message_id
        transition(session, delivery, DeliveryStatus.SUCCEEDED, "sent", now=now)
        return DeliveryStatus.SUCCEEDED
    permanent = attempt.outcome == AttemptOutcome.PERMANENT_FAILURE
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


def _attempt(
    delivery: Delivery,
    started_at: dt.datetime,
    finished_at: dt.datetime,
    error: BaseException | None,
    *,
    number: int | None = None,
) -> DeliveryAttempt:
    """The attempt row for a finished call: its outcome follows the error's class."""
    attempt = DeliveryAttempt(
        delivery_id=delivery.id,
        number=delivery.attempt_count if number is None else number,
        started_at=started_at,
        finished_at=finished_at,
        outcome=AttemptOutcome.SUCCEEDED.value,
    )
    if error is not None:
        permanent = isinstance(error, DeliveryError) and not error.retryable
        attempt.outcome = (
            AttemptOutcome.PERMANENT_FAILURE if permanent else AttemptOutcome.TRANSIENT_FAILURE
        ).value
        attempt.error_class = f"{type(error).__module__}.{type(error).__qualname__}"
        attempt.error_message = str(error)[:2000]
    return attempt


def backoff(settings: Settings, attempts: int) -> dt.timedelta:
    """The wait before the next attempt after ``attempts`` failures: exponential, capped,
    with jitter over the upper half so retries of many deliveries spread out."""
    ceiling = min(settings.backoff_max, settings.backoff_base * 2 ** (attempts - 1))
    return dt.timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))
