"""The web application as an import string, for `campaigns serve --workers N` (each worker
process builds its own wiring from the settings, after the fork)."""

from __future__ import annotations

import os

from fastapi import FastAPI

from campaigns import logs
from campaigns.bootstrap import build
from campaigns.settings import get_settings
from campaigns.web.app import PARTS, Part, create_app


def create() -> FastAPI:
    """One web worker: the web only (the worker and beat run as Celery processes); the part
    `campaigns serve --only` chose."""
    logs.configure(get_settings())
    part = os.environ.get("CAMPAIGNS_WEB_PART", "all")
    chosen: Part = next((p for p in PARTS if p == part), "all")
    built = build(get_settings(), web=True, staff=chosen != "webhooks")
    return create_app(built, run_embedded=False, part=chosen)
