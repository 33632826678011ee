"""The board's own tables: users and their tasks."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm

from .extensions import db


class User(db.Model):  # type: ignore[name-defined,misc]
    """A member of the team. The email address is optional: the in-app inbox always works."""

    __tablename__ = "users"

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(primary_key=True)
    name: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(100))
    email: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.String(255), unique=True)
    manager_id: sa_orm.Mapped[int | None] = sa_orm.mapped_column(sa.ForeignKey("users.id"))

    manager: sa_orm.Mapped[User | None] = sa_orm.relationship(remote_side=[id])

    def __repr__(self) -> str:
        return f"<User {self.id} {self.name!r}>"


class Task(db.Model):  # type: ignore[name-defined,misc]
    """Something to do, assigned to at most one user."""

    __tablename__ = "tasks"

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(primary_key=True)
    title: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(200))
    assignee_id: sa_orm.Mapped[int | None] = sa_orm.mapped_column(sa.ForeignKey("users.id"))

    assignee: sa_orm.Mapped[User | None] = sa_orm.relationship()

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.title!r}>"
