"""The ``flask chimeway`` commands: a thin click layer over library functions."""

from __future__ import annotations

import datetime as dt
import time

import click
import sqlalchemy.orm as sa_orm
from flask.cli import AppGroup

from .errors import TraceNotFoundError
from .extension import current_state

chimeway_cli = AppGroup("chimeway", help="Flask-Chimeway: trace and progress notifications.")


@chimeway_cli.command("trace")
@click.argument("ref")
def trace_command(ref: str) -> None:
    """Explain an event, notification or delivery: REF is evt_<id>, ntf_<id> or dlv_<id>."""
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
    while True:
        click.echo(f"chimeway tick: {progress(now=now)}")
        if every is None:
            return
        time.sleep(every)
