"""Performing deliveries: sync dispatch after commit, attempts, retries, leases."""

from __future__ import annotations

import datetime as dt
import logging
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import (
    Channel,
    Chimeway,
    DeliveryStatus,
    IllegalTransitionError,
    Message,
    Notifier,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
)
from flask_chimeway.delivery import backoff, perform_delivery
from flask_chimeway.lifecycle import TERMINAL, TRANSITIONS, transition
from flask_chimeway.models import Delivery, DeliveryAttempt, DeliveryTransition
from flask_chimeway.progress import progress


class Flaky(Channel):
    """Fails with the queued errors, then succeeds; counts calls."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.sent: list[Message] = []

    def send(self, message: Message) -> SendResult:
        self.sent.append(message)
        if self.errors:
            raise self.errors.pop(0)
        return SendResult(provider_message_id=f"p-{message.delivery_id}-{message.attempt}")


@pytest.fixture
def flaky(chimeway: Chimeway) -> Flaky:
    channel = Flaky()
    chimeway.channel("flaky", channel)
    return channel


@pytest.fixture
def alert(chimeway: Chimeway, flaky: Flaky) -> type[Notifier]:
    @chimeway.notifier("alert", channels=["flaky"])
    class Alert(Notifier):
        def build(self, params, recipient, channel):
            return {"text": "alert"}

    return Alert


def only_delivery(db: SQLAlchemy) -> Delivery:
    db.session.expire_all()
    return db.session.scalars(sa.select(Delivery)).one()


def reasons(delivery: Delivery) -> list[tuple[str, str]]:
    return [(tr.to_status, tr.reason) for tr in delivery.transitions]


def test_success_records_one_attempt_and_the_transitions(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky
) -> None:
    alert.trigger(1)
    db.session.commit()

    delivery = only_delivery(db)
    assert delivery.status == "succeeded"
    assert delivery.completed_at is not None
    [attempt] = delivery.attempts
    assert (attempt.number, attempt.outcome) == (1, "succeeded")
    assert attempt.provider_message_id == f"p-{delivery.id}-1"
    assert reasons(delivery) == [("sending", "claimed"), ("succeeded", "sent")]
    [message] = flaky.sent
    assert message.idempotency_key == f"chimeway-delivery-{delivery.id}"


def test_a_channel_error_is_recorded_and_never_reaches_the_caller(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky
) -> None:
    flaky.errors.append(ZeroDivisionError("provider exploded"))
    alert.trigger(1)
    db.session.commit()  # does not raise

    delivery = only_delivery(db)
    assert delivery.status == "failed"
    assert delivery.status_reason == "transient_failure"
    assert delivery.next_attempt_at is not None
    [attempt] = delivery.attempts
    assert attempt.outcome == "transient_failure"
    assert attempt.error_class == "builtins.ZeroDivisionError"
    assert attempt.error_message == "provider exploded"
    # the caller's session is still usable
    db.session.execute(sa.select(1))


def test_a_permanent_error_cancels_at_once(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky
) -> None:
    flaky.errors.append(PermanentDeliveryError("mailbox does not exist"))
    alert.trigger(1)
    db.session.commit()

    delivery = only_delivery(db)
    assert (delivery.status, delivery.status_reason) == ("cancelled", "permanent_failure")
    [attempt] = delivery.attempts
    assert attempt.outcome == "permanent_failure"
    assert attempt.error_class == "flask_chimeway.errors.PermanentDeliveryError"
    assert progress(now=dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).performed == 0
    assert len(flaky.sent) == 1


def test_transient_errors_retry_on_the_tick_until_success(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky
) -> None:
    flaky.errors.extend([TransientDeliveryError("429"), TransientDeliveryError("503")])
    alert.trigger(1)
    db.session.commit()
    due = only_delivery(db).next_attempt_at
    assert due is not None

    assert progress(now=due - dt.timedelta(seconds=1)).performed == 0
    assert progress(now=due).performed == 1
    second_due = only_delivery(db).next_attempt_at
    assert second_due is not None
    assert second_due > due
    assert progress(now=second_due).performed == 1

    delivery = only_delivery(db)
    assert delivery.status == "succeeded"
    assert [a.outcome for a in delivery.attempts] == [
        "transient_failure",
        "transient_failure",
        "succeeded",
    ]
    assert [a.number for a in delivery.attempts] == [1, 2, 3]
    assert [m.attempt for m in flaky.sent] == [1, 2, 3]
    # one key for every attempt, so a provider can drop a retry it already accepted
    assert len({m.idempotency_key for m in flaky.sent}) == 1


def test_transient_errors_until_exhaustion_cancel(
    make_app: t.Any, db: SQLAlchemy, alert: t.Any, flaky: Flaky
) -> None:
    app = make_app(CHIMEWAY_MAX_ATTEMPTS=3)
    flaky.errors.extend(TransientDeliveryError(f"try {i}") for i in range(5))
    with app.app_context():
        alert.trigger(1)
        db.session.commit()
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        progress(now=later)
        progress(now=later + dt.timedelta(days=1))
        assert progress(now=later + dt.timedelta(days=2)).performed == 0

        delivery = only_delivery(db)
        assert (delivery.status, delivery.status_reason) == ("cancelled", "retries_exhausted")
        assert len(delivery.attempts) == 3
        assert delivery.transitions[-1].detail == "try 2"
        assert len(flaky.sent) == 3


def test_savepoint_rollback_drops_only_its_deliveries(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky
) -> None:
    alert.trigger(1)
    nested = db.session.begin_nested()
    alert.trigger(2)
    nested.rollback()
    with db.session.begin_nested():
        alert.trigger(3)
    db.session.commit()

    assert sorted(m.recipient.id for m in flaky.sent) == ["1", "3"]


def test_perform_is_idempotent(app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky) -> None:
    alert.trigger(1)
    db.session.commit()
    delivery_id = only_delivery(db).id

    assert perform_delivery(delivery_id) is None
    assert perform_delivery(delivery_id + 1000) is None
    assert len(flaky.sent) == 1


def test_a_stale_lease_is_abandoned_and_retried(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky, chimeway: Chimeway
) -> None:
    # The worker "dies" after claiming: the claim is committed, the outcome never is.
    from flask_chimeway.delivery import claim_delivery

    alert.trigger(1)
    db.session.info.clear()  # forget the staged ids: as if the process died at commit
    db.session.commit()
    delivery_id = only_delivery(db).id
    with sa.orm.Session(db.engine) as session:
        assert claim_delivery(session, chimeway.get_state(), delivery_id) is not None
        session.commit()

    assert progress().abandoned == 0  # the lease is still live
    expiry = only_delivery(db).lease_expires_at
    assert expiry is not None
    report = progress(now=expiry + dt.timedelta(seconds=1))
    assert (report.abandoned, report.performed) == (1, 1)

    delivery = only_delivery(db)
    assert delivery.status == "succeeded"
    assert [(a.number, a.outcome) for a in delivery.attempts] == [
        (1, "abandoned"),
        (2, "succeeded"),
    ]
    assert ("failed", "lease_expired") in reasons(delivery)
    assert len(flaky.sent) == 1


def test_a_crash_before_dispatch_is_performed_by_the_tick(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky
) -> None:
    alert.trigger(1)
    db.session.info.clear()  # forget the staged ids: as if the process died at commit
    db.session.commit()
    assert only_delivery(db).status == "pending"

    assert progress().performed == 1
    assert only_delivery(db).status == "succeeded"


def test_notifier_removed_from_the_code_cancels_with_a_reason(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky, chimeway: Chimeway
) -> None:
    alert.trigger(1)
    db.session.info.clear()  # forget the staged ids: as if the process died at commit
    db.session.commit()
    del chimeway._notifiers["alert"]

    assert progress().performed == 0
    delivery = only_delivery(db)
    assert (delivery.status, delivery.status_reason) == ("cancelled", "notifier_missing")
    assert flaky.sent == []


def test_recipient_gone_at_send_time_cancels_with_a_reason(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky, chimeway: Chimeway
) -> None:
    from flask_chimeway import Recipient

    known = {"1"}
    chimeway.recipient_loader(lambda i: Recipient(id=i) if i in known else None)
    alert.trigger(1)
    db.session.info.clear()  # forget the staged ids: as if the process died at commit
    db.session.commit()
    known.clear()

    progress()
    delivery = only_delivery(db)
    assert (delivery.status, delivery.status_reason) == ("cancelled", "recipient_missing")


def test_illegal_transitions_are_refused(app: Flask, db: SQLAlchemy, alert: t.Any) -> None:
    alert.trigger(1)
    db.session.commit()
    delivery = only_delivery(db)
    with pytest.raises(IllegalTransitionError, match=r"cannot go from succeeded to sending"):
        transition(db.session, delivery, DeliveryStatus.SENDING, "claimed")
    assert delivery.status == "succeeded"


def test_the_transition_table_is_closed() -> None:
    for source, targets in TRANSITIONS.items():
        assert source not in TERMINAL
        assert source not in targets
    assert {"succeeded", "cancelled", "suppressed", "digested"} == {s.value for s in TERMINAL}


def test_attempts_and_transitions_are_append_only(app: Flask, db: SQLAlchemy, alert: t.Any) -> None:
    alert.trigger(1)
    db.session.commit()
    attempt = db.session.scalars(sa.select(DeliveryAttempt)).one()
    attempt.outcome = "succeeded-ish"
    with pytest.raises(TypeError, match=r"append-only"):
        db.session.flush()
    db.session.rollback()
    log = db.session.scalars(sa.select(DeliveryTransition)).first()
    assert log is not None
    log.reason = "rewritten"
    with pytest.raises(TypeError, match=r"append-only"):
        db.session.flush()


def test_backoff_grows_exponentially_with_jitter_and_a_cap(app: Flask, chimeway: Chimeway) -> None:
    settings = chimeway.get_state().settings  # base 30 s, max 3600 s
    for attempts, ceiling in [(1, 30), (2, 60), (3, 120), (8, 3600), (30, 3600)]:
        waits = {backoff(settings, attempts).total_seconds() for _ in range(50)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(waits) > 1


def test_log_channel_logs_ids_not_content_at_info(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway, caplog: pytest.LogCaptureFixture
) -> None:
    @chimeway.notifier("logged", channels=["log"])
    class Logged(Notifier):
        def build(self, params, recipient, channel):
            return {"text": "the secret plan"}

    with caplog.at_level(logging.INFO, logger="flask_chimeway"):
        Logged.trigger(1)
        db.session.commit()
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("logged" in m and "recipient 1" in m for m in info)
    assert not any("secret plan" in m for m in info)


def test_a_recipient_passed_to_trigger_is_kept_for_the_send(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky
) -> None:
    from flask_chimeway import Recipient

    alert.trigger(Recipient(id="u1", email="ada@example.com", addresses={"flaky": "dev-1"}))
    db.session.commit()
    [message] = flaky.sent
    assert message.recipient.email == "ada@example.com"
    assert message.address == "dev-1"


def test_a_recipient_loader_that_raises_is_a_failed_attempt(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky, chimeway: Chimeway
) -> None:
    from flask_chimeway import Recipient

    broken = {"on": False}

    def load(identity: str) -> Recipient:
        if broken["on"]:
            raise ConnectionError("users service down")
        return Recipient(id=identity)

    chimeway.recipient_loader(load)
    alert.trigger([1, 2])
    db.session.info.clear()  # forget the staged ids: as if the process died at commit
    db.session.commit()
    broken["on"] = True
    assert progress().performed == 0  # neither row stops the tick for the other

    db.session.expire_all()
    rows = db.session.scalars(sa.select(Delivery).order_by(Delivery.id)).all()
    assert [(d.status, d.status_reason) for d in rows] == [
        ("failed", "recipient_loader_failed")
    ] * 2
    assert rows[0].attempts[0].error_class == "builtins.ConnectionError"
    broken["on"] = False
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert progress(now=later).performed == 2
    assert len(flaky.sent) == 2


def test_a_job_for_an_attempt_runs_whatever_the_workers_clock_says(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky
) -> None:
    alert.trigger(1)
    db.session.info.clear()  # forget the staged ids: as if the process died at commit
    db.session.commit()
    delivery = only_delivery(db)
    lagging = delivery.created_at - dt.timedelta(minutes=5)
    assert perform_delivery(delivery.id, now=lagging) is None, "not due by that clock"
    assert perform_delivery(delivery.id, attempt=2, now=lagging) is None, "not attempt 2"
    assert perform_delivery(delivery.id, attempt=1, now=lagging) == DeliveryStatus.SUCCEEDED
    assert perform_delivery(delivery.id, attempt=1) is None, "a duplicate job does nothing"
    assert len(flaky.sent) == 1


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_two_claims_of_one_row_on_sqlite_give_one_lease(
    app: Flask, db: SQLAlchemy, alert: t.Any, chimeway: Chimeway
) -> None:
    """SQLite has no row locks: both sessions read the row as pending, the version column
    makes the second write fail instead of claiming it again."""
    from flask_chimeway.delivery import claim_delivery

    alert.trigger(1)
    db.session.info.clear()  # forget the staged ids: as if the process died at commit
    db.session.commit()
    delivery_id = only_delivery(db).id
    state = chimeway.get_state()
    with sa.orm.Session(db.engine) as first, sa.orm.Session(db.engine) as second:
        stale = second.get(Delivery, delivery_id)  # read as pending, version 1
        assert stale is not None
        assert claim_delivery(first, state, delivery_id) is not None
        first.commit()
        stale.attempt_count += 1
        transition(second, stale, DeliveryStatus.SENDING, "claimed")
        with pytest.raises(sa.orm.exc.StaleDataError):
            second.flush()


def test_the_base_delivery_error_is_retried(
    app: Flask, db: SQLAlchemy, alert: t.Any, flaky: Flaky
) -> None:
    from flask_chimeway import DeliveryError

    flaky.errors.append(DeliveryError("provider said no, maybe later"))
    alert.trigger(1)
    db.session.commit()
    assert only_delivery(db).status == "failed"


def test_deleting_an_event_deletes_its_rows(app: Flask, db: SQLAlchemy, alert: t.Any) -> None:
    from .helpers import no_rows

    result = alert.trigger([1, 2])
    db.session.commit()
    db.session.delete(result.event)
    db.session.commit()
    assert no_rows(db)
