"""``trigger``: check everything, render content, then add the rows to the caller's session."""

from __future__ import annotations

import dataclasses
import logging
import typing as t

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
import sqlalchemy.orm as sa_orm
from sqlalchemy.dialects import postgresql, sqlite

from . import dispatch
from .errors import (
    InvalidIdempotencyKeyError,
    InvalidTenantError,
    RecipientNotFoundError,
    TriggerError,
    UnknownNotifierError,
)
from .models import Delivery, Event, Notification, utcnow
from .notifier import Notifier, check_content
from .params import validate_params
from .recipients import Recipient, normalize_identity, normalize_recipients, recipient_snapshot
from .workflows.dsl import Deliver, Param, Workflow
from .workflows.start import check_definition, start_runs

if t.TYPE_CHECKING:
    from .extension import Chimeway, State

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TriggerResult:
    """What :meth:`Chimeway.trigger` created, or found when the idempotency key was seen."""

    event: Event
    notifications: list[Notification]
    deliveries: list[Delivery]
    #: ``True`` when the idempotency key was used before: nothing new was created or sent.
    duplicate: bool = False


def trigger(
    chimeway: Chimeway,
    state: State,
    key: str,
    recipients: t.Any,
    params: t.Mapping[str, t.Any] | None,
    *,
    idempotency_key: str | None,
    tenant: str | None,
    session: sa_orm.Session,
    correlation_id: str | None,
) -> TriggerResult:
    """The body of :meth:`Chimeway.trigger`; see there."""
    notifier_cls = chimeway.notifiers.get(key) if isinstance(key, str) else None
    if notifier_cls is None:
        known = ", ".join(sorted(chimeway.notifiers)) or "none"
        raise UnknownNotifierError(
            f"No notifier is registered under {key!r}. Registered keys: {known}."
        )
    targets = normalize_recipients(recipients)
    idempotency_key = check_text(
        "idempotency_key", idempotency_key, 255, InvalidIdempotencyKeyError
    )
    tenant_value = check_text("tenant", tenant, 200, InvalidTenantError) or ""
    correlation_id = check_text("correlation_id", correlation_id, 255, TriggerError)
    clean_params = validate_params(params)

    if idempotency_key is not None:
        existing = _find_event(session, tenant_value, idempotency_key)
        if existing is not None:
            return _duplicate(session, existing)

    notifier = notifier_cls()
    workflow = notifier_cls.workflow
    if workflow is not None:
        check_definition(session, state, notifier_cls)
    planned: list[tuple[str, dict[str, t.Any] | None, list[dict[str, t.Any]]]] = []
    for target in targets:
        recipient = chimeway.load_recipient(target)
        if recipient is None:
            raise RecipientNotFoundError(
                f"The recipient loader returned None for {normalize_identity(target)!r};"
                " trigger only for recipients it knows, or pass a Recipient."
            )
        if workflow is None:
            plans = [
                {"channel": channel, "content": _build(notifier, clean_params, recipient, channel)}
                for channel in notifier_cls.channels
            ]
        else:
            plans = plan_steps(chimeway, notifier, workflow, clean_params, recipient)
        snapshot = recipient_snapshot(target) if isinstance(target, Recipient) else None
        planned.append((normalize_identity(target), snapshot, plans))

    values = {
        "tenant": tenant_value,
        "notifier_key": key,
        "notifier_version": notifier_cls.version,
        "params": state.redactor.redact(clean_params),
        "idempotency_key": idempotency_key,
        "correlation_id": correlation_id,
    }
    event = _insert_event(session, values)
    if event is None:
        # another transaction committed the same key between our check and our insert
        existing = _find_event(session, tenant_value, t.cast(str, idempotency_key))
        if existing is None:  # pragma: no cover - the conflict names a committed row
            raise RuntimeError(f"idempotency key {idempotency_key!r} conflicted, then vanished")
        return _duplicate(session, existing)

    session.flush()  # the event's id; on SQLite also its single write lock
    now = utcnow()
    sqlite = session.get_bind(Event).dialect.name == "sqlite"
    notification_rows: list[dict[str, t.Any]] = [
        {
            "event_id": event.id,
            "tenant": tenant_value,
            "recipient_id": identity,
            "recipient_data": snapshot,
            "notifier_key": key,
            "created_at": now,
        }
        for identity, snapshot, _ in planned
    ]
    if sqlite:
        _assign_ids(session, Notification, notification_rows)
    notifications = _bulk_insert(session, Notification, notification_rows)
    status = "pending" if workflow is None else "held"
    delivery_rows: list[dict[str, t.Any]] = [
        {
            **plan,
            "notification_id": notification.id,
            "status": status,
            "status_reason": "planned" if workflow is None else "held",
            "created_at": now,
            "updated_at": now,
            "next_attempt_at": now if workflow is None else None,
        }
        for notification, (_, _, plans) in zip(notifications, planned, strict=True)
        for plan in plans
    ]
    if sqlite:
        _assign_ids(session, Delivery, delivery_rows)
    deliveries = _bulk_insert(session, Delivery, delivery_rows)
    if workflow is None:
        dispatch.stage(session, [d.id for d in deliveries])
    else:
        start_runs(session, notifier_cls, workflow, notifications, deliveries, clean_params, now)
    logger.debug(
        "event %s (%s): %d notification(s), %d deliveries planned",
        event.id,
        key,
        len(notifications),
        len(deliveries),
    )
    return TriggerResult(event=event, notifications=notifications, deliveries=deliveries)


def _build(
    notifier: Notifier, params: dict[str, t.Any], recipient: Recipient, channel: str
) -> dict[str, t.Any]:
    return check_content(notifier.key, channel, notifier.build(params, recipient, channel))


def plan_steps(
    chimeway: Chimeway,
    notifier: Notifier,
    workflow: Workflow,
    params: dict[str, t.Any],
    recipient: Recipient,
) -> list[dict[str, t.Any]]:
    """One delivery per delivery step of ``workflow``, its content built now. An
    escalation whose target resolves to nobody gets no delivery: its run records the
    step as skipped when it reaches it."""
    plans = []
    for index, step in enumerate(workflow.steps):
        if not isinstance(step, Deliver):
            continue
        plan: dict[str, t.Any] = {"channel": step.channel, "step": index}
        target: Recipient | None = recipient
        if step.to is not None:
            target = _escalation_target(chimeway, step, params, recipient)
            if target is None:
                continue
            plan["recipient_id"] = target.id
            plan["recipient_data"] = recipient_snapshot(target)
        assert target is not None
        plan["content"] = _build(notifier, params, target, step.channel)
        plans.append(plan)
    return plans


def _escalation_target(
    chimeway: Chimeway, step: Deliver, params: dict[str, t.Any], recipient: Recipient
) -> Recipient | None:
    if isinstance(step.to, Param):
        identity = params.get(step.to.name)
    else:
        identity = step.to(params, recipient) if step.to is not None else None
    if identity is None or (isinstance(identity, str) and not identity.strip()):
        return None
    normalize_identity(identity)
    return chimeway.load_recipient(identity)


def check_text(name: str, value: object, limit: int, error: type[TriggerError]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise error(f"{name} must be a non-blank string or None, not {value!r}.")
    if len(value) > limit:
        raise error(f"{name} is {len(value)} characters long; the limit is {limit}.")
    return value


def _find_event(session: sa_orm.Session, tenant: str, idempotency_key: str) -> Event | None:
    return session.scalars(
        sa.select(Event).where(Event.tenant == tenant, Event.idempotency_key == idempotency_key)
    ).first()


def _insert_event(session: sa_orm.Session, values: dict[str, t.Any]) -> Event | None:
    """Insert the event; ``None`` when its idempotency key is already taken."""
    if values["idempotency_key"] is None:
        event = Event(**values)
        session.add(event)
        return event
    dialect = session.get_bind(Event).dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = (
            insert(Event)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["tenant", "idempotency_key"])
            .returning(Event)
        )
        return session.scalars(stmt).first()
    try:
        with session.begin_nested():
            event = Event(**values)
            session.add(event)
        return event
    except sa_exc.IntegrityError:
        return None


def _assign_ids(
    session: sa_orm.Session,
    model: type[Notification] | type[Delivery],
    rows: list[dict[str, t.Any]],
) -> None:
    """Number new rows on SQLite so they can be inserted in one statement.

    SQLite cannot batch INSERT ... RETURNING in a guaranteed order without a client-side
    key, so without ids every row would be its own INSERT. The event insert before this
    holds SQLite's single write lock until commit: no other writer can take these ids.
    """
    start = (session.scalar(sa.select(sa.func.max(model.id))) or 0) + 1
    for offset, row in enumerate(rows):
        row["id"] = start + offset


M = t.TypeVar("M", Notification, Delivery)


def _bulk_insert(session: sa_orm.Session, model: type[M], rows: list[dict[str, t.Any]]) -> list[M]:
    """Insert ``rows`` with batched INSERT ... RETURNING and get them back as ORM objects
    in the caller's session, in the order given."""
    if not rows:
        return []
    if "id" in rows[0]:  # numbered by _assign_ids: one executemany, then one SELECT
        session.execute(sa.insert(model), rows)
        return list(
            session.scalars(
                sa.select(model)
                .where(model.id.between(rows[0]["id"], rows[-1]["id"]))
                .order_by(model.id)
            ).all()
        )
    stmt = sa.insert(model).returning(model, sort_by_parameter_order=True)
    return list(session.scalars(stmt, rows).all())


def _duplicate(session: sa_orm.Session, event: Event) -> TriggerResult:
    notifications = session.scalars(
        sa.select(Notification).where(Notification.event_id == event.id).order_by(Notification.id)
    ).all()
    deliveries = session.scalars(
        sa.select(Delivery)
        .join(Notification)
        .where(Notification.event_id == event.id)
        .order_by(Notification.id, Delivery.id)
    ).all()
    return TriggerResult(event, list(notifications), list(deliveries), duplicate=True)
