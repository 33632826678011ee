"""Content: build() and Jinja templates through the app's loader."""

from __future__ import annotations

import pathlib
import typing as t

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Channel, Chimeway, Notifier, Recipient


@pytest.fixture
def templated_app(make_app: t.Any, tmp_path: pathlib.Path) -> t.Iterator[Flask]:
    folder = tmp_path / "templates" / "chimeway" / "task.assigned"
    folder.mkdir(parents=True)
    (folder / "email.txt").write_text(
        '{% set subject = "Task: " ~ params.title %}'
        "Hi {{ recipient.name }}, {{ params.by }} assigned you {{ params.title }}."
    )
    (folder / "email.html").write_text("<p>{{ params.title }}</p>")
    (folder / "in_app.txt").write_text("{{ params.title }}")
    app = make_app()
    app.template_folder = str(tmp_path / "templates")
    with app.app_context():
        yield app


def test_templates_render_text_html_and_subject(
    templated_app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    chimeway.channel("email", Channel())

    @chimeway.notifier("task.assigned", channels=["in_app", "email"])
    class TaskAssigned(Notifier):
        pass

    result = TaskAssigned.trigger(
        Recipient(id="7", name="Bob"), {"title": "<script>x</script>", "by": "Ada"}
    )
    in_app, email = (d.content for d in result.deliveries)
    assert in_app == {"text": "<script>x</script>"}
    assert email["subject"] == "Task: <script>x</script>"
    assert email["text"] == "Hi Bob, Ada assigned you <script>x</script>."
    assert email["html"] == "<p>&lt;script&gt;x&lt;/script&gt;</p>"


def test_build_can_use_the_templates_and_add_to_them(
    templated_app: Flask, chimeway: Chimeway
) -> None:
    @chimeway.notifier("task.assigned", channels=["in_app"])
    class TaskAssigned(Notifier):
        def build(self, params, recipient, channel):
            content = self.render_templates(params, recipient, channel)
            return {**content, "url": f"/tasks/{params['id']}"}

    result = TaskAssigned.trigger(1, {"title": "Write docs", "id": 3})
    assert result.deliveries[0].content == {"text": "Write docs", "url": "/tasks/3"}


def test_template_folder_is_configurable(
    make_app: t.Any, tmp_path: pathlib.Path, chimeway: Chimeway
) -> None:
    folder = tmp_path / "templates" / "notices" / "hello"
    folder.mkdir(parents=True)
    (folder / "in_app.txt").write_text("hello {{ recipient.id }}")
    app = make_app(CHIMEWAY_TEMPLATE_FOLDER="notices")
    app.template_folder = str(tmp_path / "templates")

    @chimeway.notifier("hello", channels=["in_app"])
    class Hello(Notifier):
        pass

    with app.app_context():
        assert Hello.trigger(4).deliveries[0].content == {"text": "hello 4"}


def test_content_is_rendered_from_the_params_before_redaction(
    app: Flask, chimeway: Chimeway
) -> None:
    @chimeway.notifier("password.reset", channels=["in_app"])
    class Reset(Notifier):
        def build(self, params, recipient, channel):
            return {"text": f"/reset?token={params['reset_token']}"}

    result = Reset.trigger(1, {"reset_token": "abc123"})
    assert result.event.params == {"reset_token": "[REDACTED]"}
    assert result.deliveries[0].content == {"text": "/reset?token=abc123"}
