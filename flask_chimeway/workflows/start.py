"""Starting runs inside the caller's transaction, and the version check of definitions."""

from __future__ import annotations

import datetime as dt
import typing as t

import sqlalchemy.orm as sa_orm
from sqlalchemy.dialects import postgresql, sqlite

from .. import dispatch
from ..errors import WorkflowDefinitionError
from ..models import Delivery, Notification, WorkflowDefinition, WorkflowRun
from . import engine
from .dsl import Workflow

if t.TYPE_CHECKING:
    from ..extension import State
    from ..notifier import Notifier


def check_definition(session: sa_orm.Session, state: State, notifier_cls: type[Notifier]) -> None:
    """Record the notifier's workflow under its version the first time it is used, and
    refuse steps that changed under a version already used.

    :raise WorkflowDefinitionError: naming the notifier and the version to bump to.
    """
    workflow = notifier_cls.workflow
    marker = (notifier_cls.key, notifier_cls.version)
    if workflow is None or marker in state.checked_workflows:
        return
    stored = session.get(WorkflowDefinition, marker)
    if stored is None:
        values = {
            "notifier_key": notifier_cls.key,
            "notifier_version": notifier_cls.version,
            "fingerprint": workflow.fingerprint(),
            "definition": workflow.to_json(),
        }
        dialect = session.get_bind(WorkflowDefinition).dialect.name
        if dialect in ("postgresql", "sqlite"):
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            session.execute(insert(WorkflowDefinition).values(**values).on_conflict_do_nothing())
        else:
            with session.begin_nested():
                session.add(WorkflowDefinition(**values))
        stored = session.get(WorkflowDefinition, marker)
    if stored is not None and stored.fingerprint != workflow.fingerprint():
        raise WorkflowDefinitionError(
            f"The workflow of notifier {notifier_cls.key!r} version {notifier_cls.version}"
            " differs from the one first used under that version; runs keep the steps they"
            f" started with, so declare the change as version={notifier_cls.version + 1}."
        )
    state.checked_workflows.add(marker)


def check_definitions(session: sa_orm.Session, state: State) -> None:
    """:func:`check_definition` for every workflow notifier (worker and tick start-up)."""
    for notifier_cls in state.chimeway.notifiers.values():
        if notifier_cls.workflow is not None:
            check_definition(session, state, notifier_cls)


def start_runs(
    session: sa_orm.Session,
    notifier_cls: type[Notifier],
    workflow: Workflow,
    notifications: t.Sequence[Notification],
    deliveries: t.Sequence[Delivery],
    params: t.Mapping[str, t.Any],
    now: dt.datetime,
) -> list[WorkflowRun]:
    """One run per notification, started at step 0, in the caller's session."""
    definition = workflow.to_json()
    match_values = {name: params.get(name) for name in sorted(workflow.match_sources())}
    runs = [
        WorkflowRun(
            notification_id=n.id,
            tenant=n.tenant,
            recipient_id=n.recipient_id,
            notifier_key=notifier_cls.key,
            notifier_version=notifier_cls.version,
            state=engine.ACTIVE,
            current_step=0,
            definition=definition,
            match_values=match_values,
            created_at=now,
            updated_at=now,
        )
        for n in notifications
    ]
    session.add_all(runs)
    session.flush()
    by_step = {(d.notification_id, d.step): d for d in deliveries}
    advance = engine.Advance()
    for run in runs:
        engine.log(session, run, "started", now, f"{notifier_cls.key} v{notifier_cls.version}")
        engine.run_from(
            session,
            run,
            0,
            now,
            advance,
            find=lambda notification_id, step: by_step.get((notification_id, step)),
        )
    session.flush()
    dispatch.stage(session, advance.activated)
    dispatch.stage(session, advance.waits, kind="wait")
    return runs


__all__ = ["check_definition", "check_definitions", "start_runs"]
