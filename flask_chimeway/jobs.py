"""RQ job functions: module-level, taking ids only, run by ``flask chimeway worker``
inside the app context."""

from __future__ import annotations

from .delivery import perform_delivery
from .progress import progress


def perform_delivery_job(delivery_id: int) -> str | None:
    """Claim, send and record one delivery; the status it ended in, or ``None``."""
    status = perform_delivery(delivery_id)
    return None if status is None else status.value


def progress_job() -> str:
    """One progression tick (what rq-scheduler enqueues every minute)."""
    return str(progress())
