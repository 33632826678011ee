"""The pages: people, sign-up, tasks, and each user's inbox."""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from flask_chimeway.models import Notification

from .extensions import db
from .models import Task, User
from .notifications import TaskAssignedNotifier, WelcomeNotifier

bp = Blueprint("board", __name__)

INBOX_LIMIT = 100


def all_users() -> list[User]:
    return list(db.session.scalars(sa.select(User).order_by(User.name, User.id)))


@bp.get("/")
def index() -> str:
    return render_template("index.html", users=all_users())


@bp.route("/signup", methods=["GET", "POST"])
def signup() -> str | Response | tuple[str, int]:
    if request.method == "GET":
        return render_template("signup.html", users=all_users(), form={})
    name = request.form.get("name", "").strip()
    email = request.form.get("email", "").strip() or None
    manager_id = request.form.get("manager_id", "")
    manager = db.session.get(User, int(manager_id)) if manager_id.isdigit() else None
    error = None
    if not name or len(name) > 100:
        error = "Please give a name of at most 100 characters."
    elif email is not None and ("@" not in email or len(email) > 255):
        error = f"{email!r} does not look like an email address."
    elif email is not None and db.session.scalar(sa.select(User.id).where(User.email == email)):
        error = f"{email} has already signed up."
    elif manager_id and manager is None:
        error = "That manager does not exist."
    if error is not None:
        flash(error, "error")
        return render_template("signup.html", users=all_users(), form=request.form), 400

    user = User(name=name, email=email, manager=manager)
    db.session.add(user)
    db.session.flush()
    WelcomeNotifier.trigger(
        user.id,
        {"name": user.name, "manager": manager.name if manager else None},
        idempotency_key=f"welcome:{user.id}",
    )
    db.session.commit()
    flash(f"Welcome, {user.name}! This is your inbox.")
    return redirect(url_for("board.inbox", user_id=user.id))


@bp.get("/tasks")
def tasks() -> str:
    rows = db.session.scalars(
        sa.select(Task).options(sa_orm.joinedload(Task.assignee)).order_by(Task.id)
    )
    return render_template("tasks.html", tasks=list(rows), users=all_users())


def required_user(field: str) -> User:
    """The user whose id the form field holds; a 400 when it names nobody."""
    value = request.form.get(field, "")
    user = db.session.get(User, int(value)) if value.isdigit() else None
    if user is None:
        abort(400, f"The form field {field!r} must name an existing user.")
    return user


def optional_user(field: str) -> User | None:
    """Like :func:`required_user`, but an empty field means nobody."""
    return required_user(field) if request.form.get(field) else None


def assign(task: Task, assignee: User, assigned_by: User) -> None:
    """Give ``task`` to ``assignee`` and notify them, in the current transaction."""
    task.assignee = assignee
    TaskAssignedNotifier.trigger(
        assignee.id,
        {"task_id": task.id, "title": task.title, "assigned_by": assigned_by.name},
    )


@bp.post("/tasks")
def create_task() -> Response:
    title = request.form.get("title", "").strip()
    if not title or len(title) > 200:
        abort(400, "A task needs a title of at most 200 characters.")
    actor = required_user("actor_id")
    assignee = optional_user("assignee_id")
    task = Task(title=title)
    db.session.add(task)
    db.session.flush()
    if assignee is not None:
        assign(task, assignee, actor)
    db.session.commit()
    flash(f"Task #{task.id} created.")
    return redirect(url_for("board.tasks", _anchor=f"task-{task.id}"))


@bp.post("/tasks/<int:task_id>/assign")
def assign_task(task_id: int) -> Response:
    task = db.get_or_404(Task, task_id)
    assignee = required_user("assignee_id")
    actor = required_user("actor_id")
    if task.assignee_id == assignee.id:
        flash(f"Task #{task.id} is already {assignee.name}'s.")
    else:
        assign(task, assignee, actor)
        db.session.commit()
        flash(f"Task #{task.id} assigned to {assignee.name}.")
    return redirect(url_for("board.tasks", _anchor=f"task-{task.id}"))


@dataclasses.dataclass(frozen=True)
class DeliveryLine:
    channel: str
    status: str
    reason: str


@dataclasses.dataclass(frozen=True)
class InboxItem:
    """One notification as the inbox shows it: its in-app content and every delivery."""

    public_id: str
    notifier_key: str
    created_at: dt.datetime
    title: str
    text: str
    deliveries: list[DeliveryLine]

    @classmethod
    def from_notification(cls, notification: Notification) -> InboxItem | None:
        """``None`` when the notification has no in-app delivery: it is not an inbox item."""
        in_app = next((d for d in notification.deliveries if d.channel == "in_app"), None)
        if in_app is None:
            return None
        content = in_app.content
        return cls(
            public_id=notification.public_id,
            notifier_key=notification.notifier_key,
            created_at=notification.created_at,
            title=str(content.get("title") or content.get("subject") or notification.notifier_key),
            text=str(content.get("text", "")),
            deliveries=[
                DeliveryLine(d.channel, d.status, d.status_reason) for d in notification.deliveries
            ],
        )


@bp.get("/users/<int:user_id>/inbox")
def inbox(user_id: int) -> str:
    user = db.get_or_404(User, user_id)
    notifications = db.session.scalars(
        sa.select(Notification)
        .where(Notification.tenant == "", Notification.recipient_id == str(user.id))
        .options(sa_orm.selectinload(Notification.deliveries))
        .order_by(Notification.id.desc())
        .limit(INBOX_LIMIT)
    )
    items = [item for n in notifications if (item := InboxItem.from_notification(n))]
    return render_template("inbox.html", user=user, items=items)
