"""The example task board: what a user of the example relies on."""

from __future__ import annotations

import email
import email.policy
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from example.taskboard import create_app, db
from example.taskboard.models import Task, User
from flask_chimeway.models import Delivery, DeliveryAttempt, Notification
from flask_chimeway.testing import capture


@pytest.fixture
def app(tmp_path: Path) -> t.Iterator[Flask]:
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'taskboard.sqlite'}",
            "TASKBOARD_OUTBOX": str(tmp_path / "outbox"),
        }
    )
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def sign_up(client: FlaskClient, name: str, email: str = "") -> int:
    response = client.post("/signup", data={"name": name, "email": email})
    assert response.status_code == 302, response.text
    with client.application.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.name == name))
    assert user_id is not None
    return user_id


def create_task(client: FlaskClient, title: str, actor: int) -> int:
    response = client.post("/tasks", data={"title": title, "actor_id": actor})
    assert response.status_code == 302, response.text
    with client.application.app_context():
        task_id = db.session.scalar(sa.select(Task.id).where(Task.title == title))
    assert task_id is not None
    return task_id


def deliveries_of(app: Flask, user_id: int) -> dict[tuple[str, str], tuple[str, str]]:
    """``(notifier key, channel) -> (status, reason)`` of the user's deliveries."""
    with app.app_context():
        rows = db.session.execute(
            sa.select(
                Notification.notifier_key,
                Delivery.channel,
                Delivery.status,
                Delivery.status_reason,
            )
            .join(Delivery.notification)
            .where(Notification.recipient_id == str(user_id))
        )
        return {(key, channel): (status, reason) for key, channel, status, reason in rows}


def test_signing_up_sends_the_welcome_in_app_and_by_email(app: Flask, client: FlaskClient) -> None:
    with capture(app) as outbox:
        ada = sign_up(client, "Ada", "ada@example.com")

    outbox.assert_sent("user.welcome", recipient=ada, channel="in_app", containing="Ada", count=1)
    [sent] = outbox.assert_sent("user.welcome", recipient=ada, channel="email", count=1)
    assert sent.content["subject"] == "Welcome to the task board, Ada"
    assert len(outbox.messages) == 2
    assert deliveries_of(app, ada) == {
        ("user.welcome", "in_app"): ("succeeded", "sent"),
        ("user.welcome", "email"): ("succeeded", "sent"),
    }


def test_the_welcome_email_is_written_to_the_outbox(app: Flask, client: FlaskClient) -> None:
    ada = sign_up(client, "Ada", "ada@example.com")

    [path] = Path(app.config["TASKBOARD_OUTBOX"]).glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"] == "Ada <ada@example.com>"
    assert message["Subject"] == "Welcome to the task board, Ada"
    body = message.get_body(("plain",))
    assert body is not None
    assert "Hello Ada" in body.get_content()
    assert deliveries_of(app, ada)[("user.welcome", "email")] == ("succeeded", "sent")


def test_signing_up_twice_with_one_email_address_is_refused(client: FlaskClient) -> None:
    sign_up(client, "Ada", "ada@example.com")

    with capture(client.application) as outbox:
        response = client.post("/signup", data={"name": "Ada 2", "email": "ada@example.com"})

    assert response.status_code == 400
    assert "already signed up" in response.text
    outbox.assert_nothing_sent()


def test_assigning_a_task_notifies_only_the_assignee(app: Flask, client: FlaskClient) -> None:
    ada = sign_up(client, "Ada", "ada@example.com")
    bob = sign_up(client, "Bob", "bob@example.com")
    task = create_task(client, "Write the release notes", actor=ada)

    with capture(app) as outbox:
        response = client.post(f"/tasks/{task}/assign", data={"assignee_id": bob, "actor_id": ada})

    assert response.status_code == 302
    outbox.assert_sent("task.assigned", recipient=bob, channel="in_app", count=1)
    [sent] = outbox.assert_sent("task.assigned", recipient=bob, channel="email", count=1)
    assert sent.content["subject"] == f"Task #{task} is yours: Write the release notes"
    assert "Ada assigned you task" in sent.content["text"]
    assert "<strong>Write the release notes</strong>" in sent.content["html"]
    outbox.assert_not_sent("task.assigned", recipient=ada)
    assert len(outbox.messages) == 2
    with app.app_context():
        assigned = db.session.get(Task, task)
        assert assigned is not None
        assert assigned.assignee_id == bob


def test_creating_a_task_with_an_assignee_notifies_the_assignee(
    app: Flask, client: FlaskClient
) -> None:
    ada = sign_up(client, "Ada", "ada@example.com")

    with capture(app) as outbox:
        client.post("/tasks", data={"title": "Review", "assignee_id": ada, "actor_id": ada})

    outbox.assert_sent("task.assigned", recipient=ada, channel="email", containing="Review")


def test_the_inbox_shows_the_assignment_to_the_assignee_only(
    app: Flask, client: FlaskClient
) -> None:
    ada = sign_up(client, "Ada", "ada@example.com")
    bob = sign_up(client, "Bob", "bob@example.com")
    task = create_task(client, "Write the release notes", actor=ada)
    client.post(f"/tasks/{task}/assign", data={"assignee_id": bob, "actor_id": ada})

    # a fresh client: no flashed messages from the forms above on the page
    reader = app.test_client()
    bobs = reader.get(f"/users/{bob}/inbox").text
    adas = reader.get(f"/users/{ada}/inbox").text

    assert "Ada assigned you a task" in bobs
    assert "Write the release notes" in bobs
    assert "in_app: succeeded (sent)" in bobs
    assert bobs.index("Write the release notes") < bobs.index("Welcome, Bob!"), "newest first"
    assert "Welcome, Ada!" in adas
    assert "Write the release notes" not in adas
    assert "Welcome, Bob!" not in adas


def test_a_user_without_email_gets_the_email_delivery_cancelled(
    app: Flask, client: FlaskClient
) -> None:
    bob = sign_up(client, "Bob")

    assert deliveries_of(app, bob) == {
        ("user.welcome", "in_app"): ("succeeded", "sent"),
        ("user.welcome", "email"): ("cancelled", "permanent_failure"),
    }
    with app.app_context():
        outcomes = db.session.scalars(
            sa.select(DeliveryAttempt.outcome)
            .join(DeliveryAttempt.delivery)
            .where(Delivery.channel == "email")
        ).all()
    assert outcomes == ["permanent_failure"]
    assert not Path(app.config["TASKBOARD_OUTBOX"]).exists()
    inbox = app.test_client().get(f"/users/{bob}/inbox").text
    assert "email: cancelled (permanent_failure)" in inbox


def test_the_demo_command_prints_the_traces(app: Flask) -> None:
    runner = app.test_cli_runner()

    first = runner.invoke(args=["demo"])
    second = runner.invoke(args=["demo"])

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    out = second.output
    assert "duplicate=True" in out
    assert "evt_1  user.welcome v1" in out
    assert "evt_3  task.assigned v1" in out
    assert "email  now cancelled (permanent_failure)" in out
    assert "permanent_failure  [flask_chimeway.errors.PermanentDeliveryError" in out
    assert "trace evt_5 (rolled back): No event" in out
    # the second run starts from a fresh database, so it ends with the same counts
    assert "6 deliveries succeeded (sent: 6)" in out
    assert "2 deliveries cancelled (permanent_failure: 2)" in out
    assert "2 email(s) in the outbox" in out
    assert len(list(Path(app.config["TASKBOARD_OUTBOX"]).glob("*.eml"))) == 2
    with app.app_context():
        names = db.session.scalars(sa.select(User.name).order_by(User.id)).all()
    assert names == ["Ada", "Bob"], "the rolled-back sign-up left no user"
