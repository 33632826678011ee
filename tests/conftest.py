"""Fixtures: an app per test on SQLite (a file) and on a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import typing as t
import uuid

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Chimeway

PG_ADMIN_URL = os.environ.get(
    "CHIMEWAY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(what: str, exc: BaseException) -> t.NoReturn:
    """Skip locally, fail in CI: a missing service must never pass CI silently."""
    message = f"{what} is not reachable ({type(exc).__name__}: {exc})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it.", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> t.Iterator[str]:
    """A throwaway PostgreSQL database for this test run, dropped at the end."""
    name = f"chimeway_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        service_missing("PostgreSQL at " + PG_ADMIN_URL, exc)
    url = sa.make_url(PG_ADMIN_URL).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend a behaviour test runs on: each runs on both."""
    return t.cast(str, request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: t.Any) -> str:
    if backend == "postgresql":
        return t.cast(str, request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def db() -> SQLAlchemy:
    return SQLAlchemy()


@pytest.fixture
def chimeway(db: SQLAlchemy) -> Chimeway:
    return Chimeway(db=db)


AppFactory: t.TypeAlias = t.Callable[..., Flask]


@pytest.fixture
def make_app(db: SQLAlchemy, chimeway: Chimeway, database_url: str) -> t.Iterator[AppFactory]:
    """Build an app with the given config, its tables created; dropped afterwards."""
    apps: list[Flask] = []

    def make(**config: t.Any) -> Flask:
        app = Flask(f"test_app_{len(apps)}")
        app.config.update(SQLALCHEMY_DATABASE_URI=database_url, TESTING=True, **config)
        db.init_app(app)
        chimeway.init_app(app)
        with app.app_context():
            db.create_all()
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


@pytest.fixture
def app(make_app: AppFactory) -> t.Iterator[Flask]:
    """An app with Chimeway on the test's backend, inside an app context."""
    app = make_app()
    with app.app_context():
        yield app


REDIS_TEST_URL = os.environ.get("CHIMEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_OWNER_KEY = "chimeway-test-run-owner"


@pytest.fixture(scope="session")
def redis_url() -> t.Iterator[str]:
    """A Redis db index of this test run's own: the first empty one of 15..1.

    Test runs on one machine (CI, a developer, a benchmark) never share an index, so
    flushing it before and after each test cannot disturb another run.
    """
    import redis

    base = sa.make_url(REDIS_TEST_URL.replace("redis://", "postgresql://", 1))
    owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for index in range(15, 0, -1):
        url = f"redis://{base.host or '127.0.0.1'}:{base.port or 6379}/{index}"
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            # an index with keys but no owner belongs to something else (a benchmark)
            taken = client.dbsize() == 0 and client.set(
                REDIS_OWNER_KEY, owner, nx=True, ex=6 * 3600
            )
        except redis.RedisError as exc:
            client.close()
            service_missing("Redis at " + REDIS_TEST_URL, exc)
        if taken:
            client.close()
            break
        client.close()
    else:
        pytest.fail("Every Redis db index 1-15 is held by another test run.")
    yield url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> t.Iterator[t.Any]:
    import redis

    client = redis.Redis.from_url(redis_url)
    owner = client.get(REDIS_OWNER_KEY)
    client.flushdb()
    client.set(REDIS_OWNER_KEY, owner or b"?", ex=6 * 3600)
    yield client
    client.flushdb()
    client.set(REDIS_OWNER_KEY, owner or b"?", ex=6 * 3600)
    client.close()
