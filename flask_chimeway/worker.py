"""``flask chimeway worker``: an RQ worker whose every job runs in a fresh app context."""

from __future__ import annotations

import os
import typing as t

import rq
import sqlalchemy.orm as sa_orm
from flask import Flask

from .extension import current_state
from .queues import QUEUES, connection
from .workflows.start import check_definitions


class AppContextJob(rq.job.Job):
    """An RQ job that runs inside an app context of :attr:`flask_app`.

    A fresh context per job gives each job a fresh ``db.session``: one failed job cannot
    poison the next. In a forked work horse, the pooled connections inherited from the
    parent are dropped (not closed: the parent still owns them) before the job runs.
    """

    flask_app: t.ClassVar[Flask]
    parent_pid: t.ClassVar[int]
    #: Jobs this class ran in this process (``testing.drain`` reports it).
    performed: t.ClassVar[int] = 0

    def perform(self) -> t.Any:
        type(self).performed += 1
        with self.flask_app.app_context():
            if os.getpid() != self.parent_pid:
                for engine in self.flask_app.extensions["sqlalchemy"].engines.values():
                    engine.dispose(close=False)
            return super().perform()


def job_class_for(app: Flask) -> type[AppContextJob]:
    """An :class:`AppContextJob` subclass bound to ``app``."""
    return type("ChimewayJob", (AppContextJob,), {"flask_app": app, "parent_pid": os.getpid()})


def make_worker(
    app: Flask,
    queues: t.Sequence[str] = QUEUES,
    *,
    simple: bool = False,
    name: str | None = None,
) -> rq.worker.BaseWorker:
    """Build the RQ worker ``flask chimeway worker`` runs, for ``app``.

    :param queues: the queues to listen on, in priority order.
    :param simple: run jobs in the worker process (``SimpleWorker``) instead of forking a
        work horse per job: several times faster, but a job that crashes the interpreter
        takes the worker with it.
    """
    with app.app_context():
        state = current_state()
        redis = connection(state)
        with sa_orm.Session(bind=state.chimeway.db.engine) as session:
            check_definitions(session, state)  # refuse changed workflows at start-up
            session.commit()
    worker_class = rq.SimpleWorker if simple else rq.Worker
    job_class = job_class_for(app)
    return worker_class(
        [rq.Queue(q, connection=redis, job_class=job_class) for q in queues],
        connection=redis,
        job_class=job_class,
        name=name,
    )


def run_worker(
    app: Flask,
    queues: t.Sequence[str] = QUEUES,
    *,
    burst: bool = False,
    simple: bool = False,
    with_scheduler: bool = True,
    max_jobs: int | None = None,
    logging_level: str = "INFO",
) -> bool:
    """Run a worker until stopped (SIGTERM finishes the current job first) or, with
    ``burst``, until the queues are empty. ``with_scheduler`` also moves retries scheduled
    for later (RQ's scheduler; one worker at a time holds its lock)."""
    worker = make_worker(app, queues, simple=simple)
    return bool(
        worker.work(
            burst=burst,
            with_scheduler=with_scheduler,
            max_jobs=max_jobs,
            logging_level=logging_level,
        )
    )
