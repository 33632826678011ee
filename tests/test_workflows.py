"""Workflows: declaration checks, versions, runs, signals, the inbox calls."""

from __future__ import annotations

import datetime as dt
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import (
    Chimeway,
    InvalidSignalError,
    InvalidTenantError,
    Notifier,
    WorkflowDefinitionError,
)
from flask_chimeway.models import Delivery, Signal, WorkflowRun
from flask_chimeway.testing import capture, clock
from flask_chimeway.workflows import (
    Workflow,
    deliver,
    escalate,
    param,
    read,
    signal,
    wait,
)


class Content(Notifier):
    def build(self, params, recipient, channel):
        return {"text": f"{channel} to {recipient.id}"}


def register(chimeway: Chimeway, key: str, workflow: Workflow, version: int = 1) -> t.Any:
    return chimeway.notifier(
        key, channels=["in_app", "log", "memory"], version=version, workflow=workflow
    )(type(key, (Content,), {}))


def runs(db: SQLAlchemy) -> list[WorkflowRun]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(WorkflowRun).order_by(WorkflowRun.id)))


def reasons(run: WorkflowRun) -> list[tuple[int, str]]:
    return [(tr.step, tr.reason) for tr in run.transitions]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Workflow(deliver("sms")), "delivers on 'sms', which the notifier does not list"),
        (lambda: Workflow(deliver("log"), wait(minutes=0)), "positive time"),
        (lambda: Workflow(deliver("log"), wait(seconds=-5)), "positive time"),
        (lambda: Workflow(deliver("log"), wait(minutes=5)), "nothing after it"),
        (
            lambda: Workflow(
                deliver("log", on_success="stop", on_failure="stop"), deliver("memory")
            ),
            "can never run",
        ),
        (
            lambda: Workflow(
                deliver("log"), wait(minutes=1, stop_on=[signal("  ")]), deliver("log")
            ),
            "signal name must be a non-blank string",
        ),
        (lambda: Workflow(escalate("log", to=None)), "needs to=param"),  # type: ignore[arg-type]
        (lambda: Workflow(escalate("in_app", to=param("boss"))), "escalates on in_app"),
        (lambda: Workflow(), "needs steps"),
        (lambda: Workflow(deliver("log", on_failure="retry")), "outcome action is one of"),
    ],
)
def test_a_workflow_that_cannot_work_is_refused_at_registration(
    chimeway: Chimeway, make: t.Callable[[], Workflow], match: str
) -> None:
    with pytest.raises(WorkflowDefinitionError, match=match):
        register(chimeway, "broken", make())
    assert "broken" not in chimeway.notifiers


def test_a_run_records_every_step_with_its_reason(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    notifier = register(
        chimeway, "nudge", Workflow(deliver("in_app"), wait(minutes=30), deliver("memory"))
    )
    with clock(app) as c, capture(app) as outbox:
        result = notifier.trigger(1)
        db.session.commit()
        [run] = runs(db)
        assert (run.state, run.current_step) == ("waiting", 1)
        assert run.due_at == c.now + dt.timedelta(minutes=30)
        assert [d.status for d in result.deliveries] == ["succeeded", "held"]
        outbox.assert_sent("nudge", channel="in_app")
        outbox.assert_not_sent("nudge", channel="memory")

        assert c.advance(minutes=29).runs_advanced == 0
        assert c.advance(minutes=1).runs_advanced == 1
        outbox.assert_sent("nudge", channel="memory", count=1)
        assert c.advance(minutes=1).runs_advanced == 0, "each advance happens once"
    [run] = runs(db)
    assert run.state == "completed"
    assert reasons(run) == [
        (0, "started"),
        (0, "step_activated"),
        (0, "step_finished"),
        (1, "waiting"),
        (1, "wait_elapsed"),
        (2, "step_activated"),
        (2, "step_finished"),
        (2, "completed"),
    ]


def test_a_scoped_signal_stops_only_its_own_run(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    dunning = register(
        chimeway,
        "invoice.overdue",
        Workflow(
            deliver("memory"),
            wait(days=3),
            deliver("memory"),
            stop_on=[signal("invoice.paid", match={"invoice_id": "invoice_id"})],
        ),
    )
    with clock(app) as c:
        dunning.trigger(7, {"invoice_id": 42})
        dunning.trigger(7, {"invoice_id": 43})
        dunning.trigger(8, {"invoice_id": 42})  # another customer's invoice 42
        db.session.commit()
        paid = chimeway.track(7, "invoice.paid", {"invoice_id": 42})
        db.session.commit()
        c.advance(days=3)
    first, second, other = runs(db)
    assert first.state == "stopped"
    assert reasons(first)[-1] == (1, "stopped_by_signal")
    assert second.state == "completed"
    assert other.state == "completed"
    db.session.refresh(paid)
    assert paid.routed_at is not None
    assert paid.outcome == f"stopped {first.public_id}"
    held = db.session.scalars(
        sa.select(Delivery).where(
            Delivery.notification_id == first.notification_id, Delivery.step == 2
        )
    ).one()
    assert (held.status, held.status_reason) == ("cancelled", "workflow_stopped")


def test_a_signal_that_matches_nothing_is_kept_and_explained(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    register(chimeway, "plain", Workflow(deliver("log")))
    nobody = chimeway.track(5, "invoice.paid", {"invoice_id": 1})
    db.session.commit()
    db.session.refresh(nobody)
    assert nobody.outcome == (
        "matched nothing: the recipient has no active or waiting workflow run"
    )
    assert db.session.get(Signal, nobody.id) is not None


@pytest.mark.parametrize(
    ("name", "tenant", "error"),
    [
        ("", None, InvalidSignalError),
        ("   ", None, InvalidSignalError),
        (None, None, InvalidSignalError),
        ("ok", "", InvalidTenantError),
        ("ok", 42, InvalidTenantError),
    ],
)
def test_bad_signals_are_refused_and_leave_nothing(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway, name: t.Any, tenant: t.Any, error: type
) -> None:
    with pytest.raises(error):
        chimeway.track(1, name, tenant=tenant)
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signal)) == 0


def test_mark_read_is_recipient_scoped_first_time_only_and_stops_its_own_run(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    mention = register(
        chimeway,
        "mention",
        Workflow(deliver("in_app"), wait(minutes=30, stop_on=[read()]), deliver("memory")),
    )
    with clock(app) as c, capture(app) as outbox:
        one = mention.trigger(1, {"post": 1}).notifications[0]
        two = mention.trigger(1, {"post": 2}).notifications[0]
        db.session.commit()
        assert chimeway.mark_read(one.id, 2) is False, "not recipient 2's notification"
        assert chimeway.mark_read(one.id, 1) is True
        assert chimeway.mark_read(one.id, 1) is False, "first transition only"
        db.session.commit()
        c.advance(minutes=31)
    first, second = runs(db)
    assert first.state == "stopped"
    assert second.state == "completed"
    [sent] = outbox.sent("mention", channel="memory")
    assert sent.message.notification_id == two.id
    db.session.refresh(one)
    assert one.read_at is not None
    assert one.seen_at is not None
    signals = db.session.scalars(sa.select(Signal)).all()
    assert [(s.name, s.data) for s in signals] == [
        ("notification.read", {"notification_id": one.id})
    ]


def test_mark_seen_only_sets_seen(app: Flask, db: SQLAlchemy, chimeway: Chimeway) -> None:
    note = register(chimeway, "note", Workflow(deliver("in_app")))
    notification = note.trigger(3).notifications[0]
    db.session.commit()
    assert chimeway.mark_seen(notification.id, 3) is True
    assert chimeway.mark_seen(notification.id, 3) is False
    db.session.commit()
    db.session.refresh(notification)
    assert notification.seen_at is not None
    assert notification.read_at is None


def test_an_escalation_without_a_recipient_is_skipped_with_a_reason(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    chain = register(
        chimeway,
        "chain",
        Workflow(
            deliver("log"),
            wait(hours=1),
            escalate("memory", to=param("manager_id")),
            deliver("log"),
        ),
    )
    with clock(app) as c:
        result = chain.trigger(1, {"manager_id": None})
        db.session.commit()
        assert [d.step for d in result.deliveries] == [0, 3], "no delivery for step 2"
        c.advance(hours=1)
    [run] = runs(db)
    assert run.state == "completed"
    skipped = [tr for tr in run.transitions if tr.reason == "step_skipped"]
    assert len(skipped) == 1
    assert skipped[0].step == 2
    assert "found no recipient" in (skipped[0].detail or "")


def test_an_escalation_goes_to_the_resolved_recipient(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    chain = register(
        chimeway,
        "chain",
        Workflow(deliver("log"), wait(hours=1), escalate("memory", to=param("manager_id"))),
    )
    with clock(app) as c, capture(app) as outbox:
        chain.trigger(1, {"manager_id": 99})
        db.session.commit()
        c.advance(hours=1)
    [sent] = outbox.sent("chain", channel="memory")
    assert sent.recipient == "99"
    assert sent.content == {"text": "memory to 99"}


def test_changing_steps_under_a_used_version_is_refused(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    register(chimeway, "v", Workflow(deliver("log")), version=1).trigger(1)
    db.session.commit()
    # a later deploy changes the steps but forgets the version
    other = Chimeway(db=SQLAlchemy())
    changed = register(other, "v", Workflow(deliver("memory")), version=1)
    state = chimeway.get_state()
    from flask_chimeway.workflows.start import check_definition

    state.checked_workflows.clear()
    with pytest.raises(WorkflowDefinitionError, match="declare the change as version=2"):
        check_definition(db.session, state, changed)
    db.session.rollback()
    bumped = register(Chimeway(db=SQLAlchemy()), "v", Workflow(deliver("memory")), version=2)
    check_definition(db.session, state, bumped)  # a new version is fine


def test_a_run_keeps_the_version_it_started_with(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    old = register(chimeway, "flow", Workflow(deliver("log"), wait(hours=1), deliver("memory")))
    with clock(app) as c, capture(app) as outbox:
        old.trigger(1)
        db.session.commit()
        # version 2 is deployed while the run waits: one step, on another channel
        del chimeway._notifiers["flow"]
        register(chimeway, "flow", Workflow(deliver("in_app")), version=2)
        c.advance(hours=1)
        outbox.assert_sent("flow", channel="memory", count=1)
    [run] = runs(db)
    assert (run.notifier_version, run.state) == (1, "completed")


def test_a_run_whose_notifier_was_removed_stops_with_a_reason(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    gone = register(chimeway, "gone", Workflow(deliver("log"), wait(hours=1), deliver("log")))
    with clock(app) as c:
        gone.trigger(1)
        db.session.commit()
        del chimeway._notifiers["gone"]
        assert c.advance(hours=1).runs_advanced == 1
        assert c.advance(hours=1).runs_advanced == 0, "no crash loop"
    [run] = runs(db)
    assert run.state == "stopped"
    assert reasons(run)[-1] == (1, "notifier_missing")


def test_a_failed_step_goes_straight_to_the_next_delivery(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    from flask_chimeway import Channel, PermanentDeliveryError

    class Bouncing(Channel):
        def send(self, message: t.Any) -> None:
            raise PermanentDeliveryError("mailbox full")

    chimeway.channel("bouncy", Bouncing())
    flow = chimeway.notifier(
        "bounce",
        channels=["bouncy", "memory"],
        workflow=Workflow(deliver("bouncy"), wait(days=1), deliver("memory")),
    )(type("Bounce", (Content,), {}))
    with clock(app), capture(app, fake=False) as outbox:
        flow.trigger(1)
        db.session.commit()
        outbox.assert_sent("bounce", channel="memory", count=1)  # no day-long wait
    [run] = runs(db)
    assert run.state == "completed"
    assert (1, "waiting") not in reasons(run)


def test_trace_shows_the_run_beside_its_deliveries(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    flow = register(chimeway, "traced", Workflow(deliver("log"), wait(hours=1), deliver("log")))
    result = flow.trigger(1)
    db.session.commit()
    [run] = runs(db)
    out = app.test_cli_runner().invoke(args=["chimeway", "trace", f"evt_{result.event.id}"])
    assert out.exit_code == 0, out.output
    assert f"{run.public_id}  workflow v1  now waiting at step 1" in out.output
    assert "step 0   step_activated" in out.output
    assert "held         held  [until its workflow reaches step 2]" in out.output
    out = app.test_cli_runner().invoke(args=["chimeway", "trace", run.public_id])
    assert out.exit_code == 0
    assert "step 1   waiting" in out.output


def test_a_signal_tracked_before_the_wait_began_stops_it(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    from flask_chimeway import Channel, TransientDeliveryError

    class Slow(Channel):
        calls = 0

        def send(self, message: t.Any) -> None:
            Slow.calls += 1
            if Slow.calls == 1:
                raise TransientDeliveryError("try later")

    chimeway.channel("slow", Slow())
    flow = chimeway.notifier(
        "sticky",
        channels=["slow", "memory"],
        workflow=Workflow(
            deliver("slow"), wait(hours=1, stop_on=[signal("task.done")]), deliver("memory")
        ),
    )(type("Sticky", (Content,), {}))
    with clock(app) as c, capture(app, fake=False) as outbox:
        flow.trigger(1)
        db.session.commit()  # the first send fails: the run is still at step 0
        chimeway.track(1, "task.done")
        db.session.commit()
        c.advance(hours=2)  # the retry succeeds, the wait begins, the signal stops it
        c.advance(hours=2)
        outbox.assert_not_sent("sticky", channel="memory")
    [run] = runs(db)
    assert run.state == "stopped"
    assert "tracked before the wait began" in (run.transitions[-1].detail or "")


def test_a_run_without_the_matched_value_is_not_the_signals_subject(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    flow = register(
        chimeway,
        "dun",
        Workflow(
            deliver("log"),
            wait(days=1),
            deliver("log"),
            stop_on=[signal("invoice.paid", match={"invoice_id": "invoice_id"})],
        ),
    )
    flow.trigger(1, {})  # no invoice_id
    db.session.commit()
    chimeway.track(1, "invoice.paid", {"invoice_id": None})
    db.session.commit()
    [run] = runs(db)
    assert run.state == "waiting"


def test_wait_refuses_a_bare_number(chimeway: Chimeway) -> None:
    with pytest.raises(WorkflowDefinitionError, match="takes a timedelta"):
        wait(5)  # type: ignore[arg-type]


def test_mark_read_with_a_bad_tenant_changes_nothing(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    note = register(chimeway, "note", Workflow(deliver("in_app")))
    notification = note.trigger(3).notifications[0]
    db.session.commit()
    for tenant in ("", 42):
        with pytest.raises(InvalidTenantError):
            chimeway.mark_read(notification.id, 3, tenant=tenant)
    db.session.commit()
    db.session.refresh(notification)
    assert notification.read_at is None
    assert chimeway.mark_read(notification.id, 3) is True


def test_deleting_an_event_deletes_its_runs(app: Flask, db: SQLAlchemy, chimeway: Chimeway) -> None:
    flow = register(chimeway, "del", Workflow(deliver("log"), wait(hours=1), deliver("log")))
    result = flow.trigger([1, 2])
    db.session.commit()
    db.session.delete(result.event)
    db.session.commit()
    assert runs(db) == []
    flow.trigger([1, 2])  # the ids are free again on SQLite: no stale run in the way
    db.session.commit()
    assert len(runs(db)) == 2


def test_a_changed_workflow_does_not_stop_the_tick(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway, caplog: pytest.LogCaptureFixture
) -> None:
    from flask_chimeway.progress import progress

    flow = register(chimeway, "v", Workflow(deliver("log"), wait(hours=1), deliver("log")))
    flow.trigger(1)
    db.session.commit()
    del chimeway._notifiers["v"]
    register(chimeway, "v", Workflow(deliver("memory")))  # same version, other steps
    chimeway.get_state().checked_workflows.clear()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    assert progress(now=later).runs_advanced == 1, "runs follow their stored steps"
    assert "changed under a used version" in caplog.text


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_with_rq_the_end_of_a_wait_is_scheduled(
    make_app: t.Any, db: SQLAlchemy, chimeway: Chimeway, redis_url: str, redis_client: t.Any
) -> None:
    import rq

    from flask_chimeway.testing import drain
    from flask_chimeway.workflows.runner import advance_run

    app = make_app(CHIMEWAY_DISPATCHER="rq", CHIMEWAY_REDIS_URL=redis_url)
    flow = register(chimeway, "timed", Workflow(deliver("log"), wait(hours=1), deliver("log")))
    with app.app_context(), clock(app) as c:
        flow.trigger(1)
        db.session.commit()
        assert drain(app) == 1
        [run] = runs(db)
        registry = rq.registry.ScheduledJobRegistry("chimeway_workflows", connection=redis_client)
        assert registry.get_job_ids() == [f"chimeway-run-{run.id}-1"]
        scheduled = registry.get_scheduled_time(f"chimeway-run-{run.id}-1")
        assert abs((scheduled - run.due_at).total_seconds()) < 1
        assert advance_run(db.engine, run.id) is False, "not due yet"
        c.advance(hours=1, tick=False)
        assert advance_run(db.engine, run.id) is True  # what the scheduled job does
        assert drain(app) == 1
        [run] = runs(db)
        assert run.state == "completed"


def test_the_tick_moves_a_run_whose_delivery_finished_without_moving_it(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    from flask_chimeway import DeliveryStatus
    from flask_chimeway.lifecycle import transition
    from flask_chimeway.progress import progress

    flow = register(chimeway, "stall", Workflow(deliver("log"), wait(hours=1), deliver("memory")))
    result = flow.trigger(1)
    db.session.info.clear()  # forget the staged ids: as if the process died at commit
    db.session.commit()
    first = db.session.get(Delivery, result.deliveries[0].id)
    assert first is not None
    transition(db.session, first, DeliveryStatus.CANCELLED, "cancelled_by_operator")
    db.session.commit()
    now = dt.datetime.now(dt.UTC)
    assert progress(now=now).runs_advanced == 0, "not before the grace period"
    report = progress(now=now + dt.timedelta(minutes=1))
    assert report.runs_advanced == 1
    [run] = runs(db)
    assert (run.state, run.current_step) == ("completed", 2), "on_failure skips the wait"


def test_db_session_can_be_passed_explicitly(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    flow = register(
        chimeway,
        "explicit",
        Workflow(deliver("in_app"), wait(hours=1, stop_on=[read()]), deliver("log")),
    )
    notification = flow.trigger(1, session=db.session).notifications[0]
    db.session.commit()
    assert chimeway.mark_read(notification.id, 1, session=db.session) is True
    signal_row = chimeway.track(1, "task.done", session=db.session)
    db.session.commit()
    db.session.refresh(signal_row)
    assert signal_row.routed_at is not None
    [run] = runs(db)
    assert run.state == "stopped"
