"""What the board notifies, and how: the email channel, the recipient loader, the notifiers.

Importing this module registers them on :data:`~.extensions.chimeway`; the channel comes
first because a notifier naming an unregistered channel is refused.
"""

from __future__ import annotations

import typing as t

from flask_chimeway import Notifier, Recipient

from .extensions import chimeway, db
from .models import User
from .outbox import OutboxEmailChannel

chimeway.channel("email", OutboxEmailChannel())


@chimeway.recipient_loader
def load_recipient(identity: str) -> Recipient | None:
    """The :class:`~flask_chimeway.Recipient` for a user id, or ``None`` for unknown ids."""
    user = db.session.get(User, int(identity)) if identity.isdigit() else None
    if user is None:
        return None
    return Recipient(id=str(user.id), email=user.email, name=user.name)


@chimeway.notifier("user.welcome", channels=["in_app", "email"])
class WelcomeNotifier(Notifier):
    """Welcomes someone who just signed up. Its content is built in Python.

    Params: ``name``, and ``manager`` (a name, or ``None``).
    """

    def build(
        self, params: t.Mapping[str, t.Any], recipient: Recipient, channel: str
    ) -> dict[str, str]:
        name = params["name"]
        manager = params.get("manager")
        team = f" {manager} is your manager." if manager else ""
        if channel == "email":
            return {
                "subject": f"Welcome to the task board, {name}",
                "text": (
                    f"Hello {name},\n\nYour account is ready.{team} Tasks assigned to you"
                    " will show up in your inbox, and we will email you about them.\n"
                ),
            }
        return {
            "title": f"Welcome, {name}!",
            "text": f"Tasks assigned to you will show up here.{team}",
        }


@chimeway.notifier("task.assigned", channels=["in_app", "email"])
class TaskAssignedNotifier(Notifier):
    """Tells the assignee about a task. Its content comes from the templates in
    ``templates/chimeway/task.assigned/``.

    Params: ``task_id``, ``title``, ``assigned_by`` (a name).
    """
