"""The ``flask chimeway`` commands: a thin click layer over library functions."""

from __future__ import annotations

import datetime as dt
import logging
import time

import click
import sqlalchemy.orm as sa_orm
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from .errors import TraceNotFoundError
from .extension import current_state
from .queues import QUEUES

logger = logging.getLogger(__name__)

chimeway_cli = AppGroup(
    "chimeway",
    help="Flask-Chimeway: trace notifications, run the tick, the worker and the scheduler.",
)


@chimeway_cli.command("trace")
@click.argument("ref")
def trace_command(ref: str) -> None:
    """Explain what happened and why: REF is evt_<id>, ntf_<id>, dlv_<id>, run_<id> or
    sig_<id>."""
    from .explain import trace

    state = current_state()
    with sa_orm.Session(bind=state.chimeway.db.engine) as session:
        try:
            click.echo(str(trace(session, ref)))
        except TraceNotFoundError as exc:
            raise click.ClickException(str(exc)) from exc


def _parse_now(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time such as 2026-12-03T09:30:00Z."
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@chimeway_cli.command("progress")
@click.option("--now", "now_text", metavar="ISO", help="Evaluate as of this time (UTC if naive).")
@click.option(
    "--every",
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="Keep ticking, this many seconds apart, until interrupted.",
)
def progress_command(now_text: str | None, every: float | None) -> None:
    """Run the progression tick once (or --every SECONDS)."""
    from .progress import progress

    now = _parse_now(now_text)
    if every is None:
        click.echo(f"chimeway tick: {progress(now=now)}")
        return
    while True:
        try:
            click.echo(f"chimeway tick: {progress(now=now)}")
        except Exception:  # keep looping: the next tick may well succeed
            logger.exception("chimeway tick failed; trying again in %s s", every)
        time.sleep(every)


@chimeway_cli.command("worker")
@click.option(
    "--queues",
    default=",".join(QUEUES),
    show_default=True,
    help="Comma-separated queues to listen on, in priority order.",
)
@click.option("--burst", is_flag=True, help="Quit when the queues are empty.")
@click.option(
    "--simple",
    is_flag=True,
    help="Run jobs in the worker process instead of forking per job (faster).",
)
@click.option(
    "--scheduler/--no-scheduler",
    "with_scheduler",
    default=True,
    show_default=True,
    help="Also move retries scheduled for later (RQ's scheduler).",
)
@click.option("--max-jobs", type=click.IntRange(min=1), help="Quit after this many jobs.")
@with_appcontext
def worker_command(
    queues: str, burst: bool, simple: bool, with_scheduler: bool, max_jobs: int | None
) -> None:
    """Run an RQ worker for Chimeway's queues; every job runs in the app context."""
    from .worker import run_worker

    names = [q.strip() for q in queues.split(",") if q.strip()]
    if not names:
        raise click.BadParameter("name at least one queue.", param_hint="--queues")
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    run_worker(
        app,
        names,
        burst=burst,
        simple=simple,
        with_scheduler=with_scheduler,
        max_jobs=max_jobs,
    )


@chimeway_cli.command("scheduler")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5),
    default=5,
    show_default=True,
    help="Seconds between scheduler polls.",
)
@click.option("--burst", is_flag=True, help="Enqueue what is due once, then quit.")
@with_appcontext
def scheduler_command(interval: float, burst: bool) -> None:
    """Run rq-scheduler with the every-minute progression tick registered once."""
    from .scheduler import run_scheduler

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    run_scheduler(app, interval=interval, burst=burst)
