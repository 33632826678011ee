"""RQ job functions: module-level, taking ids only, run by ``flask chimeway worker``
inside the app context."""

from __future__ import annotations

from .delivery import perform_delivery
from .progress import progress


def perform_delivery_job(delivery_id: int, attempt: int | None = None) -> str | None:
    """Claim, send and record ``attempt`` of a delivery; the status it ended in, or
    ``None`` when there was nothing to do (a duplicate job, a finished delivery)."""
    status = perform_delivery(delivery_id, attempt=attempt)
    return None if status is None else status.value


def progress_job() -> str:
    """One progression tick (what rq-scheduler enqueues every minute)."""
    return str(progress())


def route_signal_job(signal_id: int) -> str | None:
    """Route one tracked signal to the workflow runs it stops; what it did."""
    from .extension import current_state
    from .workflows.runner import route_signal

    return route_signal(current_state().chimeway.db.engine, signal_id)


def advance_run_job(run_id: int) -> bool:
    """Move a workflow run past its wait, now that the wait is over."""
    from .extension import current_state
    from .workflows.runner import advance_run

    return advance_run(current_state().chimeway.db.engine, run_id)
