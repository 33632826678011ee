"""Signals (``chimeway.track``) and the inbox calls that emit them (``mark_seen``,
``mark_read``)."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm

from . import dispatch
from .errors import InvalidParamsError, InvalidSignalError, InvalidTenantError
from .models import Notification, Signal, utcnow
from .params import validate_params
from .recipients import normalize_identity
from .trigger import check_text

if t.TYPE_CHECKING:
    from .extension import State

MAX_NAME_LENGTH = 200


def track(
    state: State,
    session: sa_orm.Session,
    recipient: object,
    name: object,
    data: t.Mapping[str, t.Any] | None,
    tenant: object,
) -> Signal:
    """The body of :meth:`Chimeway.track`; see there."""
    identity = normalize_identity(recipient)
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise InvalidSignalError(
            f"A signal name must be a non-blank string of at most {MAX_NAME_LENGTH}"
            f" characters such as 'invoice.paid', not {name!r}."
        )
    check_tenant(tenant)
    try:
        clean = validate_params(data)
    except InvalidParamsError as exc:
        raise InvalidSignalError(f"Signal {name!r}: {exc}".replace("params", "data")) from exc
    signal = Signal(
        tenant=tenant or "",
        recipient_id=identity,
        name=name.strip(),
        data=state.redactor.redact(clean),
        created_at=utcnow(),
    )
    session.add(signal)
    session.flush()
    dispatch.stage(session, [signal.id], kind="signal")
    return signal


def check_tenant(tenant: object) -> None:
    """:raise InvalidTenantError: unless ``tenant`` is ``None`` or a non-blank string."""
    check_text("tenant", tenant, 200, InvalidTenantError)


def mark(
    session: sa_orm.Session,
    notification_id: int,
    recipient: object,
    what: str,
    tenant: str | None,
    state: State,
) -> bool:
    """Set ``seen_at`` (and for ``read``, ``read_at``) the first time only, and emit
    ``notification.<what>`` for the run that sent it. ``False`` when it was already so, or
    the notification is not the recipient's."""
    identity = normalize_identity(recipient)
    check_tenant(tenant)
    now = utcnow()
    columns = {"seen": ("seen_at",), "read": ("read_at", "seen_at")}[what]
    first = getattr(Notification, columns[0])
    result = session.execute(
        sa.update(Notification)
        .where(
            Notification.id == notification_id,
            Notification.recipient_id == identity,
            Notification.tenant == (tenant or ""),
            first.is_(None),
        )
        .values(
            {
                columns[0]: now,
                **(
                    {"seen_at": sa.func.coalesce(Notification.seen_at, now)}
                    if what == "read"
                    else {}
                ),
            }
        )
        .execution_options(synchronize_session=False)
    )
    if not t.cast(sa.CursorResult[t.Any], result).rowcount:
        return False
    track(
        state,
        session,
        identity,
        f"notification.{what}",
        {"notification_id": notification_id},
        tenant,
    )
    return True
