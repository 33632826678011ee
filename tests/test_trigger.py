"""Triggering: rows in the caller's transaction, results, idempotency."""

from __future__ import annotations

import threading
import typing as t

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as sa_orm
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Chimeway, Notifier, Recipient
from flask_chimeway.models import Delivery, Event, Notification

from .helpers import committed_counts, no_rows


@pytest.fixture
def welcome(chimeway: Chimeway) -> type[Notifier]:
    @chimeway.notifier("user.welcome", channels=["in_app", "memory"], version=3)
    class Welcome(Notifier):
        def build(self, params, recipient, channel):
            return {"subject": f"Welcome, {params.get('name', recipient.id)}", "text": channel}

    return Welcome


def test_trigger_adds_rows_to_the_callers_session_without_committing(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier]
) -> None:
    result = welcome.trigger([1, 2], {"name": "Ada"})

    assert result.duplicate is False
    assert result.event.id is not None
    assert result.event.notifier_key == "user.welcome"
    assert result.event.notifier_version == 3
    assert [n.recipient_id for n in result.notifications] == ["1", "2"]
    assert [(d.notification.recipient_id, d.channel) for d in result.deliveries] == [
        ("1", "in_app"),
        ("1", "memory"),
        ("2", "in_app"),
        ("2", "memory"),
    ]
    assert all(d.status == "pending" for d in result.deliveries)
    assert result.event in db.session
    assert no_rows(db), "trigger must not commit"

    db.session.commit()
    assert committed_counts(db)["chimeway_deliveries"] == 4


def test_rollback_leaves_nothing_and_sends_nothing(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier], chimeway: Chimeway
) -> None:
    welcome.trigger(1, {"name": "Ada"})
    db.session.rollback()

    assert no_rows(db)
    assert chimeway.get_state().memory.messages == []


def test_commit_sends_after_commit(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier], chimeway: Chimeway
) -> None:
    welcome.trigger(7, {"name": "Ada"})
    memory = chimeway.get_state().memory
    assert memory.messages == []
    db.session.commit()

    [message] = memory.messages
    assert message.recipient.id == "7"
    assert message.content == {"subject": "Welcome, Ada", "text": "memory"}
    statuses = db.session.scalars(sa.select(Delivery.status).order_by(Delivery.id)).all()
    assert statuses == ["succeeded", "succeeded"]


def test_recipients_are_distinct_and_keep_their_order(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier]
) -> None:
    result = welcome.trigger([3, "1", 1, Recipient(id="3"), " 2 "])
    assert [n.recipient_id for n in result.notifications] == ["3", "1", "2"]


def test_recipient_objects_skip_the_loader(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier], chimeway: Chimeway
) -> None:
    calls: list[str] = []

    @chimeway.recipient_loader
    def load(identity: str) -> Recipient:
        calls.append(identity)
        return Recipient(id=identity, name="Loaded")

    result = welcome.trigger([Recipient(id="9", name="Given"), 4])
    assert calls == ["4"]
    assert [d.content["subject"] for d in result.deliveries] == ["Welcome, 9"] * 2 + [
        "Welcome, 4"
    ] * 2


def test_chimeway_trigger_by_key_with_tenant_and_correlation_id(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier], chimeway: Chimeway
) -> None:
    result = chimeway.trigger("user.welcome", 1, tenant="acme", correlation_id="req-1")
    db.session.commit()
    event = db.session.get(Event, result.event.id)
    assert event is not None
    assert (event.tenant, event.correlation_id) == ("acme", "req-1")
    assert {n.tenant for n in result.notifications} == {"acme"}


def test_trigger_joins_an_explicit_session(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier], chimeway: Chimeway
) -> None:
    with sa_orm.Session(db.engine) as session:
        result = welcome.trigger(1, session=session)
        assert result.event in session
        assert result.event not in db.session
        session.commit()
    assert committed_counts(db)["chimeway_events"] == 1
    assert len(chimeway.get_state().memory.messages) == 1


def test_idempotency_key_returns_the_original(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier], chimeway: Chimeway
) -> None:
    first = welcome.trigger([1, 2], {"name": "Ada"}, idempotency_key="welcome:1")
    db.session.commit()
    second = welcome.trigger([1, 2, 3], {"name": "Bob"}, idempotency_key="welcome:1")
    db.session.commit()

    assert second.duplicate is True
    assert second.event.id == first.event.id
    assert [n.id for n in second.notifications] == [n.id for n in first.notifications]
    assert sorted(d.id for d in second.deliveries) == sorted(d.id for d in first.deliveries)
    assert committed_counts(db)["chimeway_events"] == 1
    assert len(chimeway.get_state().memory.messages) == 2


def test_idempotency_keys_are_per_tenant(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier]
) -> None:
    a = welcome.trigger(1, idempotency_key="k", tenant="a")
    b = welcome.trigger(1, idempotency_key="k", tenant="b")
    default = welcome.trigger(1, idempotency_key="k")
    again = welcome.trigger(1, idempotency_key="k")
    db.session.commit()

    assert not a.duplicate
    assert not b.duplicate
    assert not default.duplicate
    assert again.duplicate
    assert again.event.id == default.event.id
    assert committed_counts(db)["chimeway_events"] == 3


def test_a_duplicate_inside_the_same_transaction_is_found(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier]
) -> None:
    first = welcome.trigger([1, 2], idempotency_key="same-tx")
    second = welcome.trigger(1, idempotency_key="same-tx")
    assert second.duplicate
    assert second.event is first.event
    assert second.notifications == first.notifications
    assert second.deliveries == first.deliveries


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_concurrent_triggers_with_one_key_create_one_event(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier]
) -> None:
    """Two transactions insert the same key at once: the second waits for the first to
    commit, then returns its event as a duplicate (INSERT ... ON CONFLICT DO NOTHING)."""
    engine = db.engine
    both_inserted = threading.Barrier(2, timeout=10)
    results: dict[str, t.Any] = {}
    errors: list[BaseException] = []

    def first() -> None:
        with app.app_context(), sa_orm.Session(engine) as session:
            try:
                results["first"] = welcome.trigger(1, idempotency_key="race", session=session)
                both_inserted.wait()  # the second now blocks on our uncommitted row
                threading.Event().wait(0.3)
                session.commit()
                results["first_id"] = results["first"].event.id
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    def second() -> None:
        with app.app_context(), sa_orm.Session(engine) as session:
            try:
                both_inserted.wait()
                result = welcome.trigger(1, idempotency_key="race", session=session)
                results["second_duplicate"] = result.duplicate
                results["second_id"] = result.event.id
                session.commit()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors, errors
    assert results["second_duplicate"] is True
    assert results["second_id"] == results["first_id"]
    assert committed_counts(db)["chimeway_events"] == 1
    assert committed_counts(db)["chimeway_deliveries"] == 2


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_concurrent_trigger_after_a_rollback_creates_the_event(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier]
) -> None:
    """When the first transaction rolls back, the waiting one inserts the event itself."""
    engine = db.engine
    both_inserted = threading.Barrier(2, timeout=10)
    results: dict[str, t.Any] = {}

    def first() -> None:
        with app.app_context(), sa_orm.Session(engine) as session:
            welcome.trigger(1, idempotency_key="race", session=session)
            both_inserted.wait()
            threading.Event().wait(0.3)
            session.rollback()

    def second() -> None:
        with app.app_context(), sa_orm.Session(engine) as session:
            both_inserted.wait()
            results["second"] = welcome.trigger(1, idempotency_key="race", session=session)
            results["duplicate"] = results["second"].duplicate
            session.commit()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results["duplicate"] is False
    assert committed_counts(db)["chimeway_events"] == 1


def test_one_trigger_for_1000_recipients_batches_its_inserts(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    @chimeway.notifier("bulk", channels=["in_app", "log"])
    class Bulk(Notifier):
        def build(self, params, recipient, channel):
            return {"text": "hello"}

    inserts: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement.split("(")[0])

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        result = Bulk.trigger(list(range(1000)), idempotency_key="bulk-1")
        db.session.flush()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)

    assert len(result.notifications) == 1000
    assert len(result.deliveries) == 2000
    # one event, the notifications and the deliveries in a few batches each: never per row
    assert len(inserts) <= 8, inserts
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Notification)) == 1000


def test_the_database_refuses_a_second_delivery_on_one_channel(
    app: Flask, db: SQLAlchemy, welcome: type[Notifier]
) -> None:
    [first, _] = welcome.trigger(1).deliveries
    db.session.commit()
    db.session.add(Delivery(notification_id=first.notification_id, channel="in_app", content={}))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
