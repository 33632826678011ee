"""Example applications built with Flask-Chimeway; run them from the repository root."""
