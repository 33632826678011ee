"""Small helpers shared by the tests."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryTransition,
    Event,
    Notification,
)

CHIMEWAY_MODELS = (Event, Notification, Delivery, DeliveryAttempt, DeliveryTransition)


def committed_counts(db: SQLAlchemy) -> dict[str, int]:
    """Row counts of Chimeway's tables as another connection sees them (committed only)."""
    with db.engine.connect() as conn:
        return {
            m.__tablename__: conn.scalar(sa.select(sa.func.count()).select_from(m)) or 0
            for m in CHIMEWAY_MODELS
        }


def no_rows(db: SQLAlchemy) -> bool:
    return not any(committed_counts(db).values())


class Recorder:
    """A channel body that records messages and can be told to fail."""

    def __init__(self, failures: t.Sequence[BaseException] = ()) -> None:
        self.failures = list(failures)
        self.messages: list[t.Any] = []

    def __call__(self, message: t.Any) -> None:
        self.messages.append(message)
        if self.failures:
            raise self.failures.pop(0)
