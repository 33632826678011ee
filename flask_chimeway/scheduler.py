"""``flask chimeway scheduler``: rq-scheduler with the minute tick registered exactly once."""

from __future__ import annotations

import typing as t

from flask import Flask
from rq_scheduler import Scheduler

from .extension import current_state
from .queues import WORKFLOWS_QUEUE, connection
from .worker import job_class_for

#: The fixed id of the tick's cron entry: registering again replaces it, never adds one.
TICK_JOB_ID = "chimeway-progress-tick"
TICK_CRON = "* * * * *"


class TickScheduler(Scheduler):  # type: ignore[misc]
    """rq-scheduler that puts the tick's entry back if Redis lost it (a flush, a
    failover): one ZSCORE per poll keeps the tick from stopping silently."""

    def enqueue_jobs(self) -> t.Any:
        if TICK_JOB_ID not in self:
            register_tick(self)
        return super().enqueue_jobs()


def make_scheduler(app: Flask, *, interval: float = 5) -> Scheduler:
    """An rq-scheduler for ``app`` with the tick's cron entry registered."""
    with app.app_context():
        redis = connection(current_state())
    scheduler = TickScheduler(
        queue_name=WORKFLOWS_QUEUE,
        connection=redis,
        interval=interval,
        job_class=job_class_for(app),
    )
    register_tick(scheduler)
    return scheduler


def register_tick(scheduler: Scheduler) -> t.Any:
    """Register (or re-register) the every-minute tick under :data:`TICK_JOB_ID`."""
    return scheduler.cron(
        TICK_CRON,
        func="flask_chimeway.jobs.progress_job",
        id=TICK_JOB_ID,
        queue_name=WORKFLOWS_QUEUE,
        description="chimeway progression tick",
        result_ttl=600,
        use_local_timezone=False,
    )


def run_scheduler(app: Flask, *, interval: float = 5, burst: bool = False) -> None:
    """Run rq-scheduler until stopped; it enqueues the tick on ``chimeway_workflows``."""
    make_scheduler(app, interval=interval).run(burst=burst)
