"""The task board: a small Flask app that notifies people with Flask-Chimeway.

Run ``flask --app example.taskboard demo`` or ``flask --app example.taskboard run`` from the
repository root.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from flask import Flask

from . import notifications  # noqa: F401  (registers the email channel and the notifiers)
from .demo import demo_command
from .extensions import chimeway, db
from .views import bp

__all__ = ["chimeway", "create_app", "db"]

#: ``example/instance``: beside the package rather than at the repository root, where
#: Flask would put it for a package that is not installed.
INSTANCE_PATH = Path(__file__).resolve().parent.parent / "instance"


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the app.

    :param config: settings that override the defaults and ``FLASK_*`` environment
        variables, such as ``SQLALCHEMY_DATABASE_URI`` and ``TASKBOARD_OUTBOX`` (the folder
        the email channel writes ``.eml`` files to).
    """
    app = Flask(__name__, instance_path=str(INSTANCE_PATH))
    app.config.from_mapping(
        SECRET_KEY="dev",
        # Relative: Flask-SQLAlchemy puts it in the instance folder and creates the folder.
        SQLALCHEMY_DATABASE_URI="sqlite:///taskboard.sqlite",
        TASKBOARD_OUTBOX=str(INSTANCE_PATH / "outbox"),
        TASKBOARD_MAIL_FROM="Task board <board@example.com>",
    )
    app.config.from_prefixed_env()
    if config is not None:
        app.config.from_mapping(config)

    db.init_app(app)
    chimeway.init_app(app)
    app.register_blueprint(bp)
    app.cli.add_command(demo_command)
    return app
