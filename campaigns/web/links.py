"""Links in our messages: `GET /b/{token}` (booking) and `GET|POST /u/{token}` (unsubscribe).

A bad or expired link gets a friendly page with the clinic's phone number and a 400 or 410,
never a redirect. One-click unsubscribe (RFC 8058) is a POST with no cookies or sign-in; it is
idempotent: a second click changes nothing and says the same thing.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from campaigns import audit, queries, reachability
from campaigns.rules.links import ExpiredTokenError, TokenError
from campaigns.rules.vocabulary import Channel, ConsentSource
from campaigns.storage.consents import consent_state, suppressed_channels
from campaigns.storage.models import BOOKING_CLICKED
from campaigns.storage.patients import lock_patient_if_any
from campaigns.web.deps import ServicesDep
from campaigns.web.pages import pages

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _problem(request: Request, services: ServicesDep, purpose: str, expired: bool) -> Response:
    return pages.TemplateResponse(
        request,
        "public/link_problem.html",
        {"clinic": services.renderer.clinic, "purpose": purpose, "expired": expired},
        status_code=410 if expired else 400,
        headers=NO_STORE,
    )


@router.get("/b/{token}")
def booking(request: Request, services: ServicesDep, token: str) -> Response:
    now = services.clock.now()
    try:
        patient_id, issued = services.links.read_booking(token, now)
    except ExpiredTokenError:
        return _problem(request, services, "booking", expired=True)
    except TokenError:
        return _problem(request, services, "booking", expired=False)
    campaign: str | None = None
    try:
        with services.db.session() as session:
            known, campaign = queries.booking_campaign(session, patient_id)
            if not known:
                return _problem(request, services, "booking", expired=False)
            # The click, for the audit trail and the reports (campaigns.rollups): when the
            # link was made says which message it followed. No address, no browser.
            audit.record(
                session,
                now,
                "patient:link",
                BOOKING_CLICKED,
                patient_id=patient_id,
                issued=issued.isoformat(),
            )
    except SQLAlchemyError:
        # The token is ours and signed: she still gets to the booking page.
        log.warning(
            "a booking-link click was not recorded",
            exc_info=True,
            extra={"event": "web.links.booking_click_not_recorded"},
        )
    target = with_params(
        services.settings.booking_url,
        utm_source="santi-sms",
        utm_medium="sms",
        utm_campaign=campaign or "reply",
    )
    return RedirectResponse(target, status_code=303, headers=NO_STORE)


def with_params(url: str, **params: str) -> str:
    """The URL with campaign parameters added (its own query kept; ours win on a clash)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _unsubscribe_target(services: ServicesDep, token: str) -> dict[str, Any]:
    return services.links.verify("unsubscribe", token, services.clock.now())


@router.get("/u/{token}", response_class=HTMLResponse)
def unsubscribe_page(request: Request, services: ServicesDep, token: str) -> Response:
    try:
        _unsubscribe_target(services, token)
    except ExpiredTokenError:
        return _problem(request, services, "unsubscribe", expired=True)
    except TokenError:
        return _problem(request, services, "unsubscribe", expired=False)
    return pages.TemplateResponse(
        request,
        "public/unsubscribe.html",
        {"clinic": services.renderer.clinic, "done": False},
        headers=NO_STORE,
    )


@router.post("/u/{token}", response_class=HTMLResponse)
def unsubscribe(request: Request, services: ServicesDep, token: str) -> Response:
    """RFC 8058 one-click (List-Unsubscribe=One-Click) and the confirm page's button."""
    try:
        target = _unsubscribe_target(services, token)
    except ExpiredTokenError:
        return _problem(request, services, "unsubscribe", expired=True)
    except TokenError:
        return _problem(request, services, "unsubscribe", expired=False)
    now = services.clock.now()
    patient_id = int(target["patient"])
    with services.db.session() as session:
        patient = lock_patient_if_any(session, patient_id)
        if patient is None:
            return _problem(request, services, "unsubscribe", expired=False)
        already = Channel.EMAIL in suppressed_channels(session, patient) or (
            Channel.EMAIL not in consent_state(session, patient.id).programme
        )
        if not already:  # a second click changes nothing
            cancelled = reachability.opt_out(
                session,
                patient,
                Channel.EMAIL,
                now,
                source=ConsentSource.LINK,
                reason="unsubscribe_link",
                actor="patient:link",
            )
            log.info(
                "patient %d unsubscribed from email; %d cancelled",
                patient_id,
                cancelled,
                extra={"event": "web.links.patient_unsubscribed_email_cancelled"},
            )
    return pages.TemplateResponse(
        request,
        "public/unsubscribe.html",
        {"clinic": services.renderer.clinic, "done": True},
        headers=NO_STORE,
    )
