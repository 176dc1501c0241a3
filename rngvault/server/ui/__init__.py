"""The HTML pages under ``/ui``: runs, a run's timeline, a snapshot, a diff, a divergence,
seed sensitivity.

Read-only pages rendered on the server (Jinja2 templates, autoescaped; small CSS under
``/ui/static/``; no JavaScript), with the API's tokens: ``session`` reads a token from the
``rngvault_token`` cookie that ``/ui/login`` sets (or from an ``Authorization`` header),
``routes`` holds the pages, ``views`` turns snapshots and reports into what the templates
show, ``charts`` draws the metrics as inline SVG.
"""

from __future__ import annotations

from rngvault.server.ui.routes import root, router

__all__ = ["root", "router"]
