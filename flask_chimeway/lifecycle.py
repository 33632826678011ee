"""The delivery state machine: statuses, the transition table, and its one writer."""

from __future__ import annotations

import datetime as dt
import enum
import logging
import typing as t

import sqlalchemy.orm as sa_orm

from .errors import IllegalTransitionError

if t.TYPE_CHECKING:
    from .models import Delivery

logger = logging.getLogger(__name__)


class DeliveryStatus(enum.StrEnum):
    """Where a delivery is in its life. Stored as the lowercase value."""

    #: Planned by a workflow step that has not been reached yet.
    HELD = "held"
    PENDING = "pending"
    SENDING = "sending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    DIGESTED = "digested"

    @property
    def terminal(self) -> bool:
        """Whether nothing will ever happen to a delivery in this status again."""
        return self in TERMINAL


class AttemptOutcome(enum.StrEnum):
    """What one call to a channel came to."""

    SUCCEEDED = "succeeded"
    TRANSIENT_FAILURE = "transient_failure"
    PERMANENT_FAILURE = "permanent_failure"
    #: The worker died or the lease ran out before the channel answered.
    ABANDONED = "abandoned"


S = DeliveryStatus

#: Every allowed move. A status missing on the left has no way out (it is terminal).
TRANSITIONS: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    # a later workflow step: activated when the run reaches it, cancelled if it stops
    S.HELD: frozenset({S.PENDING, S.CANCELLED}),
    # planned; waiting for a worker, the tick, or policy
    S.PENDING: frozenset({S.SENDING, S.SUPPRESSED, S.CANCELLED, S.DIGESTED}),
    # a worker holds the lease and is calling the channel
    S.SENDING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    # a transient error; retried at ``next_attempt_at``
    S.FAILED: frozenset({S.SENDING, S.SUPPRESSED, S.CANCELLED}),
}

TERMINAL = frozenset(s for s in DeliveryStatus if s not in TRANSITIONS)

#: The reasons Flask-Chimeway itself records. Channels and policies may add their own.
REASONS = {
    "planned": "the trigger created the delivery",
    "claimed": "a worker took the lease and is calling the channel",
    "sent": "the channel accepted the message",
    "transient_failure": "the channel failed in a way that may pass; a retry is scheduled",
    "permanent_failure": "the channel refused the message for good",
    "retries_exhausted": "the last allowed attempt failed",
    "lease_expired": "the worker holding the lease stopped answering; the attempt was abandoned",
    "notifier_missing": "no notifier is registered under the event's key any more",
    "channel_missing": "the channel is not registered in this app any more",
    "recipient_missing": "the recipient loader no longer knows the recipient",
    "recipient_loader_failed": "the recipient loader raised; a retry is scheduled",
    "held": "a workflow will activate it when its run reaches the step",
    "step_activated": "the workflow run reached the delivery's step",
    "workflow_stopped": "the workflow run stopped before the delivery was sent",
}


def transition(
    session: sa_orm.Session,
    delivery: Delivery,
    to: DeliveryStatus,
    reason: str,
    *,
    detail: str | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Move ``delivery`` to ``to`` and append a :class:`DeliveryTransition` saying why.

    This is the only function that writes ``Delivery.status``.

    :param session: the session the delivery belongs to; the log row is added to it.
    :param to: the new status.
    :param reason: a short machine-readable reason such as ``"retries_exhausted"``.
    :param detail: optional human-readable detail (an error message, a rule name).
    :raise IllegalTransitionError: when the table does not allow the move.
    """
    from .models import DeliveryTransition, utcnow

    current = DeliveryStatus(delivery.status)
    if to not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransitionError(
            f"Delivery {delivery.id} cannot go from {current} to {to} ({reason});"
            f" from {current} it may go to: "
            + (", ".join(sorted(s.value for s in TRANSITIONS.get(current, ()))) or "nothing")
        )
    now = now or utcnow()
    delivery.status = to.value
    delivery.status_reason = reason
    delivery.updated_at = now
    if to.terminal:
        delivery.completed_at = now
        delivery.next_attempt_at = None
    if to is not DeliveryStatus.SENDING:
        delivery.lease_expires_at = None
    session.add(
        DeliveryTransition(
            delivery_id=delivery.id,
            from_status=current.value,
            to_status=to.value,
            reason=reason,
            detail=detail,
            created_at=now,
        )
    )
    logger.debug("delivery %s: %s -> %s (%s)", delivery.id, current, to, reason)
