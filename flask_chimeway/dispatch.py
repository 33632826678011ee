"""After-commit dispatch: stage the deliveries a transaction planned, act on the outermost
commit, forget them on rollback.

Two listeners on the :class:`sqlalchemy.orm.Session` class do it. ``after_commit`` fires on
the root COMMIT and on every RELEASE SAVEPOINT: a released savepoint hands its staged ids to
its parent, the root commit dispatches them. ``after_transaction_end`` fires on every end
(commit, rollback, close) and drops whatever is still attached to the ending transaction.
Neither emits SQL on the committing session.
"""

from __future__ import annotations

import logging
import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm
from flask import Flask, current_app

logger = logging.getLogger(__name__)

_STAGED = "chimeway_staged"

#: One staged batch: the app, the engine the rows live in, what the items are
#: (``"delivery"`` and ``"signal"``: ids; ``"wait"``: ``(run_id, step, due_at)``), the items.
Batch: t.TypeAlias = tuple[Flask, sa.Engine, str, list[t.Any]]

_listening = False


def listen() -> None:
    """Install the session listeners, once per process."""
    global _listening
    if _listening:
        return
    sa.event.listen(sa_orm.Session, "after_commit", _after_commit)
    sa.event.listen(sa_orm.Session, "after_transaction_end", _after_transaction_end)
    _listening = True


def stage(session: sa_orm.Session, ids: t.Sequence[t.Any], kind: str = "delivery") -> None:
    """Attach delivery ids (or signal ids, or waits) to the innermost transaction of
    ``session``."""
    if not ids:
        return
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None:  # pragma: no cover - trigger flushed, so one exists
        raise RuntimeError("trigger() flushed but the session has no transaction.")
    bind = session.get_bind(_delivery_mapper())
    engine = bind if isinstance(bind, sa.Engine) else bind.engine
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    staged: dict[sa_orm.SessionTransaction, list[Batch]] = session.info.setdefault(_STAGED, {})
    staged.setdefault(transaction, []).append((app, engine, kind, list(ids)))


def staged_ids(session: sa_orm.Session) -> list[int]:
    """The delivery ids waiting for ``session``'s commit (for tests and debugging)."""
    staged: dict[t.Any, list[Batch]] = session.info.get(_STAGED, {})
    return [
        i
        for batches in staged.values()
        for _, _, kind, ids in batches
        if kind == "delivery"
        for i in ids
    ]


def _delivery_mapper() -> sa_orm.Mapper[t.Any]:
    from .models import Delivery

    return sa.inspect(Delivery)


def _after_commit(session: sa_orm.Session) -> None:
    staged: dict[sa_orm.SessionTransaction, list[Batch]] | None = session.info.get(_STAGED)
    if not staged:
        return
    savepoint = session.get_nested_transaction()
    if savepoint is not None:
        batches = staged.pop(savepoint, None)
        if batches and savepoint.parent is not None:
            staged.setdefault(savepoint.parent, []).extend(batches)
        return
    batches = [b for bs in staged.values() for b in bs]
    staged.clear()
    try:
        dispatch_committed(batches)
    except Exception:  # the rows are committed; the tick picks up what was not dispatched
        logger.exception("Flask-Chimeway could not dispatch deliveries after commit")


def _after_transaction_end(session: sa_orm.Session, transaction: sa_orm.SessionTransaction) -> None:
    staged: dict[sa_orm.SessionTransaction, list[Batch]] | None = session.info.get(_STAGED)
    if staged:
        staged.pop(transaction, None)


def dispatch_committed(batches: list[Batch]) -> None:
    """Act on committed work: with ``sync``, perform the deliveries and route the signals
    now; with ``rq``, push one job for each in a single Redis pipeline."""
    by_target: dict[tuple[Flask, sa.Engine], dict[str, list[t.Any]]] = {}
    for app, engine, kind, ids in batches:
        by_target.setdefault((app, engine), {}).setdefault(kind, []).extend(ids)
    for (app, engine), work in by_target.items():
        state = app.extensions["chimeway"]
        if state.settings.dispatcher == "rq":
            from .queues import enqueue_work

            enqueue_work(
                state, work.get("delivery", []), work.get("signal", []), work.get("wait", [])
            )
            continue
        with app.app_context():
            if work.get("signal"):
                _route_now(engine, work["signal"])
            if work.get("delivery"):
                _perform_now(app, engine, work["delivery"])


def _route_now(engine: sa.Engine, ids: list[int]) -> None:
    from .workflows.runner import route_signal

    for signal_id in ids:
        try:
            route_signal(engine, signal_id)
        except Exception:  # the tick routes what is left
            logger.exception("Flask-Chimeway could not route signal %s", signal_id)


def _perform_now(app: Flask, engine: sa.Engine, ids: list[int]) -> None:
    from .delivery import BATCH_SIZE, perform_deliveries

    # A fresh app context gives the recipient loader a fresh db.session: the caller's is
    # still inside its commit and cannot run SQL.
    with app.app_context():
        for start in range(0, len(ids), BATCH_SIZE):
            batch = ids[start : start + BATCH_SIZE]
            try:
                perform_deliveries(batch, engine=engine)
            except Exception:  # the tick performs what is left
                logger.exception("Flask-Chimeway could not perform deliveries %s", batch)
