"""The FastAPI application factory: ops endpoints, staff pages, and (embedded) the runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from campaigns.bootstrap import Services
from campaigns.runtime import EmbeddedRuntime
from campaigns.web import alerts, links, ops, staff, webhooks

STATIC = Path(__file__).resolve().parent / "static"
SMS_WEBHOOK = "/webhooks/twilio/sms"


def create_app(services: Services, *, run_embedded: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime = EmbeddedRuntime(services) if run_embedded else None
        if runtime is not None:
            runtime.start()
        try:
            yield
        finally:
            if runtime is not None:
                runtime.stop()

    app = FastAPI(
        title="campaigns",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.services = services
    app.include_router(ops.router)
    app.include_router(staff.router)
    app.include_router(alerts.router)
    app.include_router(webhooks.router)
    # Patients' texts: a plain Starlette route, the hot path (campaigns.web.webhooks).
    app.add_route(SMS_WEBHOOK, webhooks.twilio_sms, methods=["POST"], include_in_schema=False)
    app.include_router(links.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
