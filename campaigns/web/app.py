"""The FastAPI application factory: the public part (providers' webhooks, patients' links) and
the staff part (sign-in, staff pages, readiness, metrics), together or apart.

Production runs them as two processes (`campaigns serve --only webhooks` and `--only staff`),
so the reverse proxy that faces the internet exposes only the public part; `make run` serves
both on one port. Every request passes campaigns.web.protection first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from campaigns import metrics
from campaigns.bootstrap import Services
from campaigns.runtime import EmbeddedRuntime
from campaigns.web import (
    account,
    alerts,
    broadcasts,
    campaign_drafts,
    campaign_pages,
    imports,
    inbox,
    links,
    messages,
    operations,
    ops,
    patients,
    reports,
    signin,
    staff,
    users,
    webhooks,
)
from campaigns.web.guard import Forbidden, SignInRequired
from campaigns.web.pages import render
from campaigns.web.protection import Protection

STATIC = Path(__file__).resolve().parent / "static"
SMS_WEBHOOK = "/webhooks/twilio/sms"
Part = Literal["all", "staff", "webhooks"]
PARTS: tuple[Part, ...] = ("all", "staff", "webhooks")


def create_app(services: Services, *, run_embedded: bool = False, part: Part = "all") -> FastAPI:
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
        openapi_url=None,
    )
    app.state.services = services
    app.include_router(ops.health)
    if part in ("all", "staff"):
        app.include_router(ops.router)
        app.include_router(signin.router)
        app.include_router(account.router)
        app.include_router(staff.router)
        app.include_router(patients.router)
        app.include_router(imports.router)
        app.include_router(alerts.router)
        app.include_router(inbox.router)
        app.include_router(users.router)
        app.include_router(operations.router)
        app.include_router(messages.router)
        app.include_router(campaign_pages.router)
        app.include_router(campaign_drafts.router)
        app.include_router(reports.router)
        app.include_router(broadcasts.router)
    if part in ("all", "webhooks"):
        app.include_router(webhooks.router)
        # Patients' texts: a plain Starlette route, the hot path (campaigns.web.webhooks).
        app.add_route(SMS_WEBHOOK, webhooks.twilio_sms, methods=["POST"], include_in_schema=False)
        app.include_router(links.router)
        metrics.prime(
            {"sms": services.sms.name, "email": services.email.name},
            (SMS_WEBHOOK, "/webhooks/twilio/status", "/webhooks/sendgrid/events"),
        )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(SignInRequired)
    async def _sign_in(_: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(exc.to, status_code=303)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        return render(
            request, "forbidden.html", reason=exc.reason, sign_in=exc.sign_in, status_code=403
        )

    app.add_middleware(
        Protection,
        settings=services.settings,
        body_limits={
            "/webhooks/sendgrid/events": webhooks.SENDGRID_MAX_BYTES + 1024,
            "/staff/import": imports.MAX_BYTES,
        },
    )
    return app
