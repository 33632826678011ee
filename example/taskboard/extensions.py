"""The extension objects, created once per process and bound to each app by the factory."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Chimeway

db = SQLAlchemy()
chimeway = Chimeway(db=db)
