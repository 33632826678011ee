"""``flask --app example.taskboard demo``: a scripted tour of the board that explains every
notification it sent, or did not send."""

from __future__ import annotations

import collections
import typing as t
from pathlib import Path

import click
import sqlalchemy as sa
import sqlalchemy.orm as sa_orm
from flask import Flask, current_app
from flask.cli import with_appcontext
from flask.testing import FlaskClient

from flask_chimeway import DeliveryStatus, TraceNotFoundError, trace
from flask_chimeway.models import Delivery, Event

from .extensions import db
from .models import Task, User
from .notifications import WelcomeNotifier

Echo: t.TypeAlias = t.Callable[[str], None]


def reset_database(app: Flask) -> None:
    """Drop and recreate every table, the board's and Chimeway's, and empty the outbox."""
    with app.app_context():
        db.drop_all()
        db.create_all()
    for path in Path(app.config["TASKBOARD_OUTBOX"]).glob("*.eml"):
        path.unlink()


def read_scalar(statement: sa.Select[t.Any]) -> t.Any:
    """Run ``statement`` on its own short session, outside the views' transactions."""
    with sa_orm.Session(bind=db.engine) as session:
        return session.scalar(statement)


def post(client: FlaskClient, url: str, data: dict[str, t.Any]) -> None:
    """Submit a form the way a browser would; stop the demo if the view refused it."""
    response = client.post(url, data=data)
    if response.status_code not in (302, 303):
        raise click.ClickException(f"POST {url} answered {response.status}:\n{response.text}")


def sign_up(client: FlaskClient, name: str, email: str, manager: int | None = None) -> int:
    post(client, "/signup", {"name": name, "email": email, "manager_id": manager or ""})
    user_id: int = read_scalar(sa.select(User.id).where(User.name == name))
    return user_id


def run_demo(app: Flask, echo: Echo = click.echo) -> None:
    """Reset ``app``'s database, play the scenario through its views, then print the trace
    of every event and a summary of what was delivered."""
    reset_database(app)
    client = app.test_client()
    with app.app_context():
        echo(f"Fresh database: {db.engine.url.render_as_string(hide_password=True)}")
        echo("Every step but 5 and 6 posts a form through the app's views, as a browser would.")

        echo("1. Ada signs up with an email address.")
        ada = sign_up(client, "Ada", "ada@example.com")

        echo("2. Bob signs up without an email address; Ada is his manager.")
        bob = sign_up(client, "Bob", "", manager=ada)

        echo("3. Ada creates a task, then assigns it to Bob.")
        title = "Write the release notes"
        post(client, "/tasks", {"title": title, "actor_id": ada})
        task = read_scalar(sa.select(Task.id).where(Task.title == title))
        post(client, f"/tasks/{task}/assign", {"assignee_id": bob, "actor_id": ada})

        echo("4. Ada creates a task assigned to herself.")
        post(client, "/tasks", {"title": "Review the budget", "assignee_id": ada, "actor_id": ada})

        echo("5. Ada's welcome is triggered again, with the same idempotency key.")
        again = WelcomeNotifier.trigger(
            ada, {"name": "Ada", "manager": None}, idempotency_key=f"welcome:{ada}"
        )
        db.session.commit()
        echo(
            f"   duplicate={again.duplicate}: {again.event.public_id} already had that key,"
            " so nothing new was created or sent."
        )

        echo("6. Carol signs up and her welcome is triggered, but the transaction rolls back.")
        emails_before = len(list(Path(app.config["TASKBOARD_OUTBOX"]).glob("*.eml")))
        carol = User(name="Carol", email="carol@example.com")
        db.session.add(carol)
        db.session.flush()
        planned = WelcomeNotifier.trigger(
            carol.id, {"name": "Carol", "manager": None}, idempotency_key=f"welcome:{carol.id}"
        )
        rolled_back = planned.event.public_id
        planned_count = len(planned.deliveries)
        db.session.rollback()
        emails_after = len(list(Path(app.config["TASKBOARD_OUTBOX"]).glob("*.eml")))
        echo(
            f"   {rolled_back} had {planned_count} deliveries planned; after the rollback the"
            f" outbox still holds {emails_after} email(s) (it held {emails_before})."
        )

        with sa_orm.Session(bind=db.engine) as session:
            echo("")
            echo("Traces (flask_chimeway.trace), one per event:")
            for event in session.scalars(sa.select(Event).order_by(Event.id)):
                echo("")
                echo(str(trace(session, event)))
            echo("")
            try:
                echo(str(trace(session, rolled_back)))
            except TraceNotFoundError as exc:
                echo(f"trace {rolled_back} (rolled back): {exc}")

            statuses = collections.Counter(
                session.execute(sa.select(Delivery.status, Delivery.status_reason)).all()
            )
        outbox = Path(app.config["TASKBOARD_OUTBOX"])
        emails = sorted(outbox.glob("*.eml"))
        echo("")
        echo("Summary")
        for status in [s for s in DeliveryStatus if any(s == found for found, _ in statuses)]:
            reasons = {r: n for (s, r), n in statuses.items() if s == status}
            detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items()))
            echo(f"  {sum(reasons.values())} deliveries {status} ({detail})")
        echo(f"  {len(emails)} email(s) in the outbox {outbox}:")
        for path in emails:
            echo(f"    {path.name}")
        echo(
            "  Browse it: .venv/bin/flask --app example.taskboard run, then open"
            f" http://127.0.0.1:5000/users/{bob}/inbox"
        )


@click.command("demo")
@with_appcontext
def demo_command() -> None:
    """Reset the database, play the scenario, print every trace."""
    run_demo(current_app._get_current_object())  # type: ignore[attr-defined]
