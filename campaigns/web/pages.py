"""Rendering staff pages: the templates, what every page knows (who is signed in, what they
may do, their CSRF token, the notice left for them), and the redirect after an action.

A notice after an action travels in the session (shown once by the next page), never in the
URL: text in a URL could be forged by a link from anywhere.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup, escape

from campaigns import staff_sessions
from campaigns.rules import wording
from campaigns.rules.roles import Permission, may
from campaigns.staff_sessions import Current
from campaigns.web.deps import get_services

pages = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")


def actor_name(actor: str | None) -> str:
    """Who did it, for people: a staff member's email ("staff:<id>:<email>" in the records)."""
    if not actor:
        return ""
    kind, _, rest = actor.partition(":")
    if kind == "staff" and ":" in rest:
        return rest.split(":", 1)[1]
    return actor


pages.env.filters["actor"] = actor_name
# One way to write dates and times on every page (campaigns.rules.wording): `day` for a date,
# `when` for an instant in the clinic's time zone (or a patient's: `x|when(patient.timezone)`),
# `label` for a field key in staff words.
pages.env.filters["day"] = wording.day
pages.env.filters["label"] = wording.label
pages.env.filters["step"] = wording.step_name
pages.env.filters["weeks"] = wording.weeks_and_days


@pass_context
def when(context: Context, instant: datetime | None, timezone: str | None = None) -> str:
    """6 Dec 2026, 14:05 in the clinic's time zone (settings.default_timezone), or in the
    given one (a patient's), then with its abbreviation if it is not the clinic's."""
    clinic = get_services(context["request"]).settings.default_timezone
    return wording.moment(instant, timezone or clinic, clinic=clinic)


pages.env.filters["when"] = when


def staff_of(request: Request) -> Current | None:
    found = getattr(request.state, "staff", None)
    return found if isinstance(found, Current) else None


def render(request: Request, name: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    staff = staff_of(request)
    flash = staff.flash if staff is not None else None
    if flash:
        context.setdefault(flash.get("kind", "notice"), flash.get("text"))
    context.setdefault("notice", None)
    context.setdefault("problem", None)
    context["staff"] = staff
    context["can"] = lambda permission: (
        staff is not None and may(staff.role, Permission(permission))
    )
    token = staff.csrf_token if staff is not None else context.get("login_token", "")
    context["csrf_token"] = token
    context["csrf_field"] = Markup(  # noqa: S704 - the token is escaped
        f'<input type="hidden" name="csrf_token" value="{escape(token)}">'
    )
    return pages.TemplateResponse(request, name, context, status_code=status_code)


def back(request: Request, url: str, *, notice: str = "", problem: str = "") -> RedirectResponse:
    """Redirect after an action, leaving its notice (or problem) for the next page. Writes to
    the database: call it from a plain `def` route (or through run_in_threadpool)."""
    staff = staff_of(request)
    if staff is not None and (notice or problem):
        services = get_services(request)
        kind, text = ("problem", problem) if problem else ("notice", notice)
        staff_sessions.set_flash(services.db, staff.id, kind, text)
    return RedirectResponse(url, status_code=303)
