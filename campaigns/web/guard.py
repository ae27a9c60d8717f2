"""Who is asking: the signed-in staff member of each request, their role, and their CSRF token.

Every staff route declares the permission it needs with `@requires(...)`; the staff routers
run `signed_in` for every request, which refuses (fails closed) a route that declares none.
A request without a valid session is sent to the sign-in page (a GET) or refused (anything
else); a state-changing request must come from one of our own pages (Origin or Referer, when
the browser sends one) and carry the session's CSRF token (form field `csrf_token` or header
`X-CSRF-Token`). A refusal changes nothing: it happens before the route runs.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Annotated, TypeVar
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from campaigns import staff_sessions
from campaigns.rules.roles import Permission, may
from campaigns.settings import Settings
from campaigns.staff_sessions import Current, Stage
from campaigns.web.deps import get_services

log = logging.getLogger(__name__)
COOKIE = "campaigns_staff"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PERMISSION = "__campaigns_permission__"
#: Where each unfinished sign-in stage continues.
STAGE_PAGES = {
    Stage.SECOND_FACTOR: "/staff/login/code",
    Stage.CHANGE_PASSWORD: "/staff/password",
    Stage.SETUP_2FA: "/staff/security",
    Stage.ACTIVE: "/staff/",
}
F = TypeVar("F", bound=Callable[..., object])


class SignInRequired(Exception):
    def __init__(self, to: str) -> None:
        super().__init__(to)
        self.to = to


class Forbidden(Exception):
    def __init__(self, reason: str, *, sign_in: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sign_in = sign_in


def requires(permission: Permission) -> Callable[[F], F]:
    """Mark a staff route with the permission it needs (checked by `signed_in`)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, PERMISSION, permission)
        return endpoint

    return mark


def timeouts(settings: Settings) -> staff_sessions.Timeouts:
    return staff_sessions.Timeouts.of(settings)


async def current(request: Request, stages: frozenset[Stage]) -> Current:
    """The request's session, if it is in one of these stages; CSRF checked for changes."""
    services = get_services(request)
    unsafe = request.method not in SAFE_METHODS
    found = await run_in_threadpool(
        staff_sessions.load,
        services.db,
        request.cookies.get(COOKIE, ""),
        services.clock.now(),
        timeouts(services.settings),
        take_flash=not unsafe,
    )
    if found is None:
        if unsafe:
            raise Forbidden("You are not signed in (or your session ended).", sign_in=True)
        raise SignInRequired(login_url(request))
    if found.stage not in stages:
        if unsafe:
            raise Forbidden("Finish signing in first.", sign_in=True)
        raise SignInRequired(STAGE_PAGES[found.stage])
    if unsafe:
        await check_csrf(request, found.csrf_token, services.settings)
    request.state.staff = found
    return found


async def signed_in(request: Request) -> Current:
    """A fully signed-in member allowed to use this route."""
    try:
        return await _allowed(request)
    except Forbidden:
        await request.close()  # an uploaded file the refused route will never read
        raise


async def _allowed(request: Request) -> Current:
    found = await current(request, frozenset({Stage.ACTIVE}))
    route = request.scope.get("route")
    permission = getattr(getattr(route, "endpoint", None), PERMISSION, None)
    if not isinstance(permission, Permission):
        # Fail closed: a route someone forgot to mark is nobody's.
        log.error(
            "staff route %s declares no permission; refused",
            getattr(route, "path", "?"),
            extra={"event": "web.guard.staff_route_declares_no"},
        )
        raise Forbidden("This page is not available.")
    if not may(found.role, permission):
        raise Forbidden("Your role does not allow this. Ask an admin if you need it.")
    return found


StaffDep = Annotated[Current, Depends(signed_in)]


def login_url(request: Request) -> str:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    if target in {"/staff", "/staff/"}:
        return "/staff/login"
    return "/staff/login?" + urlencode({"next": target})


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only one of our own staff pages, never another site."""
    if not target or not target.startswith("/staff/") or target.startswith("//"):
        return "/staff/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/staff/"
    return target


async def check_csrf(request: Request, expected: str, settings: Settings) -> None:
    origin = request.headers.get("origin")
    referer = request.headers.get("referer")
    if origin is not None:
        if not own_origin(origin, request, settings):
            raise Forbidden("This form was sent from another site; nothing was changed.")
    elif referer and not own_origin(referer, request, settings):
        raise Forbidden("This form was sent from another site; nothing was changed.")
    token = request.headers.get("x-csrf-token")
    if token is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get("csrf_token")
        token = value if isinstance(value, str) else None
    if not token or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Forbidden(
            "This page had expired, so nothing was changed. Go back, reload it and try again."
        )


def own_origin(url: str, request: Request, settings: Settings) -> bool:
    """The Origin (or Referer) is this service: its public URL, or the host it was asked as
    (already checked against the allowed hosts)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return False
    mine = {
        urlsplit(settings.public_url).netloc.lower(),
        urlsplit(settings.staff_base_url).netloc.lower(),
        request.headers.get("host", "").lower(),
    }
    return parts.netloc.lower() in mine
