"""The tables: Event → Notification → Delivery → DeliveryAttempt, plus the status log.

The classes are mapped on Flask-Chimeway's own declarative base so they can be imported
before any app exists. :class:`~flask_chimeway.Chimeway` copies their tables into the
host's ``db.metadata``, so ``db.create_all()`` and Alembic autogenerate see them.
"""

from __future__ import annotations

import datetime as dt
import functools
import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm
from sqlalchemy.dialects import postgresql

from .lifecycle import AttemptOutcome, DeliveryStatus

__all__ = [
    "Delivery",
    "DeliveryAttempt",
    "DeliveryTransition",
    "Event",
    "Notification",
    "Signal",
    "WorkflowDefinition",
    "WorkflowRun",
    "WorkflowTransition",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _jsonb() -> postgresql.JSONB:
    jsonb = postgresql.JSONB()
    # Alembic renders a JSONB variant through repr(), which prints the default astext_type
    # as a bare ``Text()``: a NameError in migrations generated on SQLite. Chimeway never
    # uses ``->>`` (``.astext``), so the attribute is left out of the repr.
    jsonb.__dict__["astext_type"] = None
    return jsonb


#: JSON everywhere, JSONB on PostgreSQL (indexable, compact, ``@>`` containment).
JSONDocument = sa.JSON().with_variant(_jsonb(), "postgresql")
#: 64-bit ids, except on SQLite where only INTEGER PRIMARY KEY autoincrements.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


#: Times pushed by :func:`flask_chimeway.testing.clock`; the last one is "now".
_frozen: list[dt.datetime] = []


def utcnow() -> dt.datetime:
    """The current time, aware, in UTC (or the fake clock's, in tests)."""
    if _frozen:
        return _frozen[-1]
    return dt.datetime.now(dt.UTC)


def as_utc(now: dt.datetime | None) -> dt.datetime:
    """``now`` in UTC (a naive value is taken to be UTC), or the current time."""
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        return now.replace(tzinfo=dt.UTC)
    return now.astimezone(dt.UTC)


class Base(sa_orm.DeclarativeBase):
    """The declarative base of Flask-Chimeway's own tables."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: sa.DateTime(timezone=True),
        dict[str, t.Any]: JSONDocument,
    }


class Event(Base):
    """One call to ``trigger``: which notifier, with which (redacted) params."""

    __tablename__ = "chimeway_events"
    __table_args__ = (sa.UniqueConstraint("tenant", "idempotency_key"),)

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(BigId, primary_key=True)
    #: ``""`` is the default tenant; stored non-null so the idempotency constraint holds.
    tenant: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(200), default="")
    notifier_key: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(200))
    notifier_version: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.Integer)
    params: sa_orm.Mapped[dict[str, t.Any]]
    idempotency_key: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.String(255))
    correlation_id: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.String(255))
    created_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(default=utcnow)

    notifications: sa_orm.Mapped[list[Notification]] = sa_orm.relationship(
        back_populates="event",
        order_by="Notification.id",
        cascade="all, delete-orphan",
    )

    @property
    def public_id(self) -> str:
        """The id ``flask chimeway trace`` accepts, such as ``evt_12``."""
        return f"evt_{self.id}"

    def __repr__(self) -> str:
        return f"<Event {self.id} {self.notifier_key!r}>"


class Notification(Base):
    """One recipient of an event; also the in-app inbox row."""

    __tablename__ = "chimeway_notifications"
    __table_args__ = (
        sa.UniqueConstraint("event_id", "recipient_id"),
        sa.Index(None, "tenant", "recipient_id", "id"),
    )

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(BigId, primary_key=True)
    event_id: sa_orm.Mapped[int] = sa_orm.mapped_column(
        sa.ForeignKey("chimeway_events.id", ondelete="CASCADE")
    )
    tenant: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(200), default="")
    recipient_id: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(255))
    #: The :class:`~flask_chimeway.Recipient` given to ``trigger``, kept and used at send
    #: time; ``None`` when an identity was given (the loader resolves it at send time).
    recipient_data: sa_orm.Mapped[dict[str, t.Any] | None]
    notifier_key: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(200))
    created_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(default=utcnow)
    seen_at: sa_orm.Mapped[dt.datetime | None]
    read_at: sa_orm.Mapped[dt.datetime | None]
    archived_at: sa_orm.Mapped[dt.datetime | None]

    event: sa_orm.Mapped[Event] = sa_orm.relationship(back_populates="notifications")
    workflow_run: sa_orm.Mapped[WorkflowRun | None] = sa_orm.relationship(
        back_populates="notification", cascade="all, delete-orphan"
    )
    deliveries: sa_orm.Mapped[list[Delivery]] = sa_orm.relationship(
        back_populates="notification",
        order_by="Delivery.id",
        cascade="all, delete-orphan",
    )

    @property
    def public_id(self) -> str:
        """The id ``flask chimeway trace`` accepts, such as ``ntf_12``."""
        return f"ntf_{self.id}"

    def __repr__(self) -> str:
        return f"<Notification {self.id} {self.notifier_key!r} to {self.recipient_id!r}>"


class Delivery(Base):
    """One channel of a notification: the state machine of :mod:`flask_chimeway.lifecycle`.

    Never assign :attr:`status` directly: :func:`flask_chimeway.lifecycle.transition` is
    the one writer, and it records the reason.
    """

    __tablename__ = "chimeway_deliveries"
    __table_args__ = (
        # one delivery per channel for a plain notifier, one per step for a workflow
        sa.Index(
            "uq_chimeway_deliveries_notification_id_channel",
            "notification_id",
            "channel",
            unique=True,
            postgresql_where=sa.text("step IS NULL"),
            sqlite_where=sa.text("step IS NULL"),
        ),
        sa.UniqueConstraint("notification_id", "step"),
        sa.Index(None, "status", "next_attempt_at"),
    )

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(BigId, primary_key=True)
    notification_id: sa_orm.Mapped[int] = sa_orm.mapped_column(
        sa.ForeignKey("chimeway_notifications.id", ondelete="CASCADE")
    )
    channel: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(100))
    #: The workflow step this delivery belongs to; ``None`` for a notifier without one.
    step: sa_orm.Mapped[int | None] = sa_orm.mapped_column(sa.Integer)
    #: Who an escalation step delivers to, when not the notification's recipient.
    recipient_id: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.String(255))
    recipient_data: sa_orm.Mapped[dict[str, t.Any] | None]
    status: sa_orm.Mapped[str] = sa_orm.mapped_column(
        sa.String(20), default=DeliveryStatus.PENDING.value
    )
    status_reason: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(100), default="planned")
    #: What is sent, rendered at trigger time from the unredacted params.
    content: sa_orm.Mapped[dict[str, t.Any]]
    attempt_count: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.Integer, default=0)
    #: When the next attempt is due: the creation time for a new delivery, the backoff
    #: for a failed one, ``None`` once terminal. The tick finds due rows through the
    #: ``(status, next_attempt_at)`` index.
    next_attempt_at: sa_orm.Mapped[dt.datetime | None] = sa_orm.mapped_column(default=utcnow)
    lease_expires_at: sa_orm.Mapped[dt.datetime | None]
    created_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(default=utcnow)
    updated_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(default=utcnow)
    completed_at: sa_orm.Mapped[dt.datetime | None]

    notification: sa_orm.Mapped[Notification] = sa_orm.relationship(back_populates="deliveries")
    attempts: sa_orm.Mapped[list[DeliveryAttempt]] = sa_orm.relationship(
        back_populates="delivery",
        order_by="DeliveryAttempt.number",
        cascade="all, delete-orphan",
    )
    transitions: sa_orm.Mapped[list[DeliveryTransition]] = sa_orm.relationship(
        back_populates="delivery",
        order_by="DeliveryTransition.id",
        cascade="all, delete-orphan",
    )
    #: Bumped by every UPDATE and checked by it (optimistic locking), so two processes
    #: that read the same row on SQLite, which has no row locks, cannot both claim it.
    version: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    @property
    def public_id(self) -> str:
        """The id ``flask chimeway trace`` accepts, such as ``dlv_12``."""
        return f"dlv_{self.id}"

    def __repr__(self) -> str:
        return f"<Delivery {self.id} {self.channel!r} {self.status}>"


class DeliveryAttempt(Base):
    """One call to a channel, numbered from 1. Append-only: rows are never updated."""

    __tablename__ = "chimeway_delivery_attempts"
    __table_args__ = (sa.UniqueConstraint("delivery_id", "number"),)

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(BigId, primary_key=True)
    delivery_id: sa_orm.Mapped[int] = sa_orm.mapped_column(
        sa.ForeignKey("chimeway_deliveries.id", ondelete="CASCADE")
    )
    number: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.Integer)
    outcome: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(30))
    started_at: sa_orm.Mapped[dt.datetime]
    finished_at: sa_orm.Mapped[dt.datetime]
    error_class: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.String(255))
    error_message: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.Text)
    provider_message_id: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.String(255))

    delivery: sa_orm.Mapped[Delivery] = sa_orm.relationship(back_populates="attempts")

    @property
    def succeeded(self) -> bool:
        """Whether the channel accepted the message on this attempt."""
        return self.outcome == AttemptOutcome.SUCCEEDED

    def __repr__(self) -> str:
        return f"<DeliveryAttempt {self.delivery_id}#{self.number} {self.outcome}>"


class DeliveryTransition(Base):
    """One status change of a delivery, with its reason. Append-only."""

    __tablename__ = "chimeway_delivery_transitions"
    __table_args__ = (sa.Index(None, "delivery_id"),)

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(BigId, primary_key=True)
    delivery_id: sa_orm.Mapped[int] = sa_orm.mapped_column(
        sa.ForeignKey("chimeway_deliveries.id", ondelete="CASCADE")
    )
    from_status: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(20))
    to_status: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(20))
    reason: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(100))
    detail: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.Text)
    created_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(default=utcnow)

    delivery: sa_orm.Mapped[Delivery] = sa_orm.relationship(back_populates="transitions")

    def __repr__(self) -> str:
        return (
            f"<DeliveryTransition {self.delivery_id} {self.from_status}->{self.to_status}"
            f" {self.reason}>"
        )


class WorkflowDefinition(Base):
    """The steps of one notifier version, as first used: later code that changes them
    under the same version is refused."""

    __tablename__ = "chimeway_workflow_definitions"

    notifier_key: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(200), primary_key=True)
    notifier_version: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.Integer, primary_key=True)
    fingerprint: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(64))
    definition: sa_orm.Mapped[dict[str, t.Any]]
    created_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(default=utcnow)


class WorkflowRun(Base):
    """One journey: a notification going through its notifier's workflow steps."""

    __tablename__ = "chimeway_workflow_runs"
    __table_args__ = (
        sa.Index(None, "state", "due_at"),
        sa.Index(None, "state", "updated_at"),
        sa.Index(None, "tenant", "recipient_id", "state"),
    )

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(BigId, primary_key=True)
    notification_id: sa_orm.Mapped[int] = sa_orm.mapped_column(
        sa.ForeignKey("chimeway_notifications.id", ondelete="CASCADE"), unique=True
    )
    tenant: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(200), default="")
    recipient_id: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(255))
    notifier_key: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(200))
    notifier_version: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.Integer)
    #: ``active`` (a step's delivery is under way), ``waiting`` (until :attr:`due_at`),
    #: ``stopped`` or ``completed``.
    state: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(20), default="active")
    current_step: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.Integer, default=0)
    due_at: sa_orm.Mapped[dt.datetime | None]
    #: The steps this run follows: a copy, so a run keeps the version it started with.
    definition: sa_orm.Mapped[dict[str, t.Any]]
    #: The values stop conditions compare signal data with, taken from the real params.
    match_values: sa_orm.Mapped[dict[str, t.Any]]
    created_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(default=utcnow)
    updated_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(default=utcnow)
    version: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.Integer, default=1)

    notification: sa_orm.Mapped[Notification] = sa_orm.relationship(back_populates="workflow_run")
    transitions: sa_orm.Mapped[list[WorkflowTransition]] = sa_orm.relationship(
        back_populates="run", order_by="WorkflowTransition.id", cascade="all, delete-orphan"
    )

    __mapper_args__ = {"version_id_col": version}

    @property
    def public_id(self) -> str:
        """The id ``flask chimeway trace`` accepts, such as ``run_12``."""
        return f"run_{self.id}"

    def __repr__(self) -> str:
        return (
            f"<WorkflowRun {self.id} {self.notifier_key!r} {self.state} step {self.current_step}>"
        )


class WorkflowTransition(Base):
    """One thing that happened to a run, with its reason. Append-only."""

    __tablename__ = "chimeway_workflow_transitions"
    __table_args__ = (sa.Index(None, "run_id"),)

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(BigId, primary_key=True)
    run_id: sa_orm.Mapped[int] = sa_orm.mapped_column(
        sa.ForeignKey("chimeway_workflow_runs.id", ondelete="CASCADE")
    )
    step: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.Integer)
    state: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(20))
    reason: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(100))
    detail: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.Text)
    created_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(default=utcnow)

    run: sa_orm.Mapped[WorkflowRun] = sa_orm.relationship(back_populates="transitions")

    def __repr__(self) -> str:
        return f"<WorkflowTransition {self.run_id} step {self.step} {self.state} {self.reason}>"


class Signal(Base):
    """Something that happened to a recipient (``notification.read``, ``invoice.paid``)
    that workflows react to. Kept, with what it did, even when it matched nothing."""

    __tablename__ = "chimeway_signals"
    __table_args__ = (sa.Index(None, "routed_at", "created_at"),)

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(BigId, primary_key=True)
    tenant: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(200), default="")
    recipient_id: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(255))
    name: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(200))
    data: sa_orm.Mapped[dict[str, t.Any]]
    created_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(default=utcnow)
    routed_at: sa_orm.Mapped[dt.datetime | None]
    #: What routing did: the runs it stopped, or why it matched none.
    outcome: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.Text)

    @property
    def public_id(self) -> str:
        """The id ``flask chimeway trace`` accepts, such as ``sig_12``."""
        return f"sig_{self.id}"

    def __repr__(self) -> str:
        return f"<Signal {self.id} {self.name!r} for {self.recipient_id!r}>"


@sa.event.listens_for(DeliveryAttempt, "before_update")
@sa.event.listens_for(DeliveryTransition, "before_update")
@sa.event.listens_for(WorkflowTransition, "before_update")
def _refuse_update(mapper: sa_orm.Mapper[t.Any], connection: sa.Connection, target: t.Any) -> None:
    raise TypeError(f"{type(target).__name__} rows are append-only; add a new row instead.")


@functools.cache
def _datetime_keys(mapper: sa_orm.Mapper[t.Any]) -> tuple[str, ...]:
    return tuple(
        attr.key for attr in mapper.column_attrs if isinstance(attr.columns[0].type, sa.DateTime)
    )


@sa.event.listens_for(Base, "load", propagate=True)
def _aware_on_load(target: Base, context: t.Any) -> None:
    _make_aware(target)


@sa.event.listens_for(Base, "refresh", propagate=True)
def _aware_on_refresh(target: Base, context: t.Any, attrs: t.Any) -> None:
    _make_aware(target)


def _make_aware(target: Base) -> None:
    """SQLite hands back naive datetimes; every datetime Chimeway writes is UTC, so mark
    them as such and let all backends show aware UTC datetimes."""
    state = target.__dict__
    for key in _datetime_keys(sa.inspect(type(target))):
        value = state.get(key)
        if value is not None and value.tzinfo is None:
            sa_orm.attributes.set_committed_value(target, key, value.replace(tzinfo=dt.UTC))


def attach(metadata: sa.MetaData) -> None:
    """Copy Flask-Chimeway's tables into ``metadata`` (the host's ``db.metadata``)."""
    for table in Base.metadata.sorted_tables:
        if table.key not in metadata.tables:
            table.to_metadata(metadata)
