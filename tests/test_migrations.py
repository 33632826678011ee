"""The tables are the host's: db.create_all() and Flask-Migrate autogenerate see them."""

from __future__ import annotations

import logging
import pathlib
import typing as t

import flask_migrate
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Chimeway

TABLES = {
    "chimeway_events",
    "chimeway_notifications",
    "chimeway_deliveries",
    "chimeway_delivery_attempts",
    "chimeway_delivery_transitions",
}


def test_create_all_creates_the_tables(make_app: t.Any, db: SQLAlchemy) -> None:
    app = make_app()
    with app.app_context():
        assert set(sa.inspect(db.engine).get_table_names()) >= TABLES
        assert set(db.metadata.tables) >= TABLES


@pytest.fixture(autouse=True)
def _restore_logging() -> t.Iterator[None]:
    """Alembic's env.py runs logging.config.fileConfig, which disables every existing
    logger (Flask-Chimeway's included) and adds handlers: undo that for later tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.disabled = False


# Flask-Migrate's generated env.py tries Flask-SQLAlchemy's deprecated get_engine() first.
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_flask_migrate_autogenerates_the_tables_on_an_empty_database(
    database_url: str, tmp_path: pathlib.Path
) -> None:
    db = SQLAlchemy()

    class Task(db.Model):  # type: ignore[name-defined,misc]
        id = sa.Column(sa.Integer, primary_key=True)

    Chimeway(db=db)
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    db.init_app(app)
    flask_migrate.Migrate(app, db)
    directory = str(tmp_path / "migrations")
    with app.app_context():
        try:
            assert not set(sa.inspect(db.engine).get_table_names()) & TABLES
            flask_migrate.init(directory)
            flask_migrate.migrate(directory, message="initial")
            [script] = (tmp_path / "migrations" / "versions").glob("*.py")
            text = script.read_text()
            for table in TABLES:
                assert f"op.create_table('{table}'" in text
            assert "ix_chimeway_deliveries_status_next_attempt_at" in text
            assert "uq_chimeway_events_tenant_idempotency_key" in text

            flask_migrate.upgrade(directory)
            assert set(sa.inspect(db.engine).get_table_names()) >= TABLES
            with db.engine.connect() as conn:
                diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
            assert diff == [], "the migrated schema must match the models exactly"
        finally:
            db.drop_all()
            with db.engine.begin() as conn:
                conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
            db.engine.dispose()
