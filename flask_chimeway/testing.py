"""Helpers for testing an app's own notifications.

.. code-block:: python

    from flask_chimeway.testing import capture

    def test_signup_welcomes(app, client):
        with capture(app) as outbox:
            client.post("/signup", data={"email": "ada@example.com"})
        outbox.assert_sent("user.welcome", recipient="1", channel="email")
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
import typing as t

from flask import Flask

from . import models
from .channels import Message

if t.TYPE_CHECKING:
    from .progress import TickReport

__all__ = ["Clock", "Outbox", "SentMessage", "capture", "clock", "drain"]


@dataclasses.dataclass(frozen=True)
class SentMessage:
    """A message a channel was asked to send while an :class:`Outbox` was capturing."""

    notifier_key: str
    recipient: str
    channel: str
    content: t.Mapping[str, t.Any]
    tenant: str | None
    message: Message

    def contains(self, text: str) -> bool:
        """Whether any string in the content contains ``text``."""
        return any(isinstance(v, str) and text in v for v in self.content.values())


class Outbox:
    """Everything sent while :func:`capture` was active, with assertions.

    :param fake: when true (the default) channels are not called: every send succeeds
        and is only recorded, like Laravel's ``Notification::fake()``.
    """

    def __init__(self, *, fake: bool = True) -> None:
        self.fake = fake
        self.messages: list[SentMessage] = []
        self._lock = threading.Lock()

    def record(self, message: Message) -> None:
        """Record ``message`` (called by Chimeway for each send)."""
        sent = SentMessage(
            notifier_key=message.notifier_key,
            recipient=message.recipient.id,
            channel=message.channel,
            content=message.content,
            tenant=message.tenant,
            message=message,
        )
        with self._lock:
            self.messages.append(sent)

    def sent(
        self,
        notifier_key: str | None = None,
        *,
        recipient: object = None,
        channel: str | None = None,
        containing: str | None = None,
        where: t.Callable[[SentMessage], bool] | None = None,
    ) -> list[SentMessage]:
        """The recorded messages matching every filter given."""
        rid = None if recipient is None else str(getattr(recipient, "id", recipient))
        return [
            m
            for m in self.messages
            if (notifier_key is None or m.notifier_key == notifier_key)
            and (rid is None or m.recipient == rid)
            and (channel is None or m.channel == channel)
            and (containing is None or m.contains(containing))
            and (where is None or where(m))
        ]

    def assert_sent(
        self,
        notifier_key: str,
        *,
        recipient: object = None,
        channel: str | None = None,
        containing: str | None = None,
        where: t.Callable[[SentMessage], bool] | None = None,
        count: int | None = None,
    ) -> list[SentMessage]:
        """Assert that matching messages were sent (exactly ``count`` of them, if given)."""
        found = self.sent(
            notifier_key,
            recipient=recipient,
            channel=channel,
            containing=containing,
            where=where,
        )
        wanted = f"exactly {count}" if count is not None else "at least one"
        if (count is None and not found) or (count is not None and len(found) != count):
            raise AssertionError(
                f"Expected {wanted} {notifier_key!r} message(s)"
                + _describe(recipient, channel, containing)
                + f", found {len(found)}. Sent: {self._summary()}"
            )
        return found

    def assert_not_sent(
        self,
        notifier_key: str,
        *,
        recipient: object = None,
        channel: str | None = None,
        containing: str | None = None,
    ) -> None:
        """Assert that no matching message was sent."""
        found = self.sent(notifier_key, recipient=recipient, channel=channel, containing=containing)
        if found:
            raise AssertionError(
                f"Expected no {notifier_key!r} message"
                + _describe(recipient, channel, containing)
                + f", found {len(found)}. Sent: {self._summary()}"
            )

    def assert_nothing_sent(self) -> None:
        """Assert that nothing at all was sent."""
        if self.messages:
            raise AssertionError(f"Expected nothing sent. Sent: {self._summary()}")

    def clear(self) -> None:
        """Forget what was recorded."""
        with self._lock:
            self.messages.clear()

    def _summary(self) -> str:
        if not self.messages:
            return "nothing"
        return ", ".join(f"{m.notifier_key} to {m.recipient} on {m.channel}" for m in self.messages)


def _describe(recipient: object, channel: str | None, containing: str | None) -> str:
    parts = []
    if recipient is not None:
        parts.append(f" to {getattr(recipient, 'id', recipient)!s}")
    if channel is not None:
        parts.append(f" on {channel}")
    if containing is not None:
        parts.append(f" containing {containing!r}")
    return "".join(parts)


@contextlib.contextmanager
def capture(app: Flask, *, fake: bool = True) -> t.Iterator[Outbox]:
    """Record every message ``app``'s channels are asked to send inside the block.

    Deliveries are performed after the transaction that triggered them commits, so
    commit inside the block (a view or ``db.session.commit()`` does).

    :param fake: do not call the real channels (default); ``False`` records and sends.
    """
    state = app.extensions.get("chimeway")
    if state is None:
        raise RuntimeError(f"App {app.name!r} is not set up with Flask-Chimeway.")
    outbox = Outbox(fake=fake)
    state.outboxes.append(outbox)
    try:
        yield outbox
    finally:
        state.outboxes.remove(outbox)


class Clock:
    """A fake clock for journeys: everything Flask-Chimeway timestamps uses it, and
    :meth:`advance` moves it and runs the tick, so waits elapse without sleeping."""

    def __init__(self, app: Flask, now: dt.datetime) -> None:
        self.app = app
        self.now = now

    def advance(
        self,
        delta: dt.timedelta | None = None,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
        tick: bool = True,
    ) -> TickReport | None:
        """Move the clock forward, then (unless ``tick=False``) run one tick at the new
        time in ``app``; returns what the tick did."""
        self.now += (delta or dt.timedelta()) + dt.timedelta(
            seconds=seconds, minutes=minutes, hours=hours, days=days
        )
        models._frozen[-1] = self.now
        return self.tick() if tick else None

    def tick(self) -> TickReport:
        """Run one tick at the clock's time."""
        from .progress import progress

        with self.app.app_context():
            return progress(now=self.now)


@contextlib.contextmanager
def clock(app: Flask, start: dt.datetime | None = None) -> t.Iterator[Clock]:
    """Freeze Flask-Chimeway's clock at ``start`` (now by default) inside the block.

    .. code-block:: python

        with clock(app) as c:
            TaskAssigned.trigger(bob.id, {...}); db.session.commit()
            c.advance(minutes=31)            # the wait is over: the email goes out
            outbox.assert_sent("task.assigned", channel="email")

    Only this process sees the fake time: use it with the ``sync`` dispatcher, or drain
    the queues in-process with :func:`drain`.
    """
    start = start or dt.datetime.now(dt.UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.UTC)
    models._frozen.append(start)
    try:
        yield Clock(app, start)
    finally:
        models._frozen.pop()


def drain(app: Flask, *, max_jobs: int | None = None) -> int:
    """Run ``app``'s queued Chimeway jobs in this process until the queues are empty (the
    ``rq`` dispatcher); returns how many ran. With ``sync`` nothing is queued: 0."""
    from .queues import QUEUES
    from .worker import make_worker

    if app.extensions["chimeway"].settings.dispatcher != "rq":
        return 0
    worker = make_worker(app, QUEUES, simple=True)
    worker.work(burst=True, with_scheduler=False, max_jobs=max_jobs, logging_level="WARNING")
    job_class: t.Any = worker.job_class
    return int(job_class.performed)
