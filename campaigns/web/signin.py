"""Signing in and out: the password, then the second factor (an authenticator code, a recovery
code or a security key), then what the account must do first (change a one-time password, set
up a second factor its role needs).

The same answer, after the same work, for an unknown email and a wrong password. Failures are
counted per account and per client address (campaigns.sign_in_throttle); past the limit the
page says how many minutes to wait and checks nothing. Each outcome is audited (never with the
email typed for an unknown account).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from campaigns import audit, passkeys, staff_accounts, staff_sessions
from campaigns.bootstrap import Services
from campaigns.passkeys import PasskeyError
from campaigns.staff_accounts import StaffMember
from campaigns.staff_sessions import Current, Stage, next_stage
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import (
    COOKIE,
    STAGE_PAGES,
    Forbidden,
    current,
    own_origin,
    safe_next,
    timeouts,
)
from campaigns.web.pages import render

router = APIRouter(prefix="/staff", include_in_schema=False)
LOGIN_COOKIE = "campaigns_login"
#: Fixed messages the sign-in page can show (a code in the URL, never its text).
MESSAGES = {
    "signed_out": "You have signed out.",
    "ended": "Your session ended. Sign in again to go on.",
    "password_changed": "Your password was changed. Sign in with the new one.",
}
WRONG = "The email address or password is not right."
WRONG_CODE = "That code is not right, or was already used."


async def _second_factor_session(request: Request) -> Current:
    return await current(request, frozenset({Stage.SECOND_FACTOR}))


SecondFactorDep = Annotated[Current, Depends(_second_factor_session)]


def login_token(services: Services, nonce: str) -> str:
    """The sign-in form's CSRF token: bound to a random cookie by our secret (no session yet)."""
    key = services.settings.secret_key.get_secret_value().encode()
    return hmac.new(key, b"login:" + nonce.encode(), hashlib.sha256).hexdigest()[:40]


def _login_page(
    request: Request,
    services: Services,
    *,
    email: str = "",
    problem: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not 20 <= len(nonce) <= 64:
        nonce = secrets.token_urlsafe(24)
    code = request.query_params.get("m", "")
    response = render(
        request,
        "login.html",
        status_code=status_code,
        login_token=login_token(services, nonce),
        email=email,
        next=safe_next(request.query_params.get("next")),
        problem=problem,
        notice=MESSAGES.get(code),
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path="/staff/login",
        httponly=True,
        samesite="lax",
        secure=services.settings.https,
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, services: ServicesDep) -> Response:
    return _login_page(request, services)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    services: ServicesDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next_page: Annotated[str, Form(alias="next", max_length=2000)] = "",
) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    origin = request.headers.get("origin") or request.headers.get("referer")
    if (
        not nonce
        or not hmac.compare_digest(csrf_token.encode(), login_token(services, nonce).encode())
        or (origin is not None and not own_origin(origin, request, services.settings))
    ):
        return _login_page(
            request,
            services,
            email=email,
            problem="The sign-in page had expired. Please try again.",
            status_code=403,
        )
    now = services.clock.now()
    address = _client(request)
    throttle = services.sign_in_throttle
    wait = throttle.minutes_locked(email, address, now)
    if wait:
        _audit_failure(services, "locked", email)
        return _login_page(
            request,
            services,
            email=email,
            problem=f"Too many failed sign-ins. Try again in {_minutes(wait)}.",
            status_code=429,
        )
    user = staff_accounts.check_password(services.db, email, password, now)
    if user is None:
        throttle.failed(email, address, now)
        _audit_failure(services, "password", email)
        return _login_page(request, services, email=email, problem=WRONG, status_code=401)
    throttle.succeeded(email)
    stage = stage_after(services, user, factor_checked=False)
    token = staff_sessions.start(services.db, user.id, stage, now, timeouts(services.settings))
    if stage is Stage.ACTIVE:
        staff_accounts.signed_in(services.db, user.id, now, method="password")
    target = safe_next(next_page) if stage is Stage.ACTIVE else STAGE_PAGES[stage]
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, services, token)
    response.delete_cookie(LOGIN_COOKIE, path="/staff/login")
    return response


@router.get("/login/code", response_class=HTMLResponse)
def code_form(request: Request, services: ServicesDep, staff: SecondFactorDep) -> Response:
    return _code_page(request, services, staff)


def _code_page(
    request: Request,
    services: Services,
    staff: Current,
    *,
    problem: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    rp = services.relying_party
    return render(
        request,
        "login_code.html",
        status_code=status_code,
        problem=problem,
        has_totp=staff.user.has_totp,
        passkeys=staff.user.passkeys > 0 and rp.usable,
    )


@router.post("/login/code", response_class=HTMLResponse)
def check_code(
    request: Request,
    services: ServicesDep,
    staff: SecondFactorDep,
    code: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    now = services.clock.now()
    email, address = staff.user.email, _client(request)
    throttle = services.sign_in_throttle
    wait = throttle.minutes_locked(email, address, now)
    if wait:
        _audit_failure(services, "locked", email, user=staff.user.id)
        return _code_page(
            request,
            services,
            staff,
            problem=f"Too many wrong codes. Try again in {_minutes(wait)}.",
            status_code=429,
        )
    method = "totp"
    accepted = staff_accounts.check_totp(services.db, services.totp_box, staff.user.id, code, now)
    if not accepted and len("".join(code.split())) > 6:
        method = "recovery_code"
        accepted = staff_accounts.use_recovery_code(services.db, staff.user.id, code, now)
    if not accepted:
        throttle.failed(email, address, now)
        _audit_failure(services, "second_factor", email, user=staff.user.id)
        return _code_page(request, services, staff, problem=WRONG_CODE, status_code=401)
    throttle.succeeded(email)
    return _factor_passed(services, staff, method)


@router.post("/login/passkey/options")
def passkey_options(services: ServicesDep, staff: SecondFactorDep) -> Response:
    options, challenge = passkeys.authentication_options(
        services.db, services.relying_party, staff.user.id
    )
    staff_sessions.set_challenge(services.db, staff.id, challenge)
    return JSONResponse(options)


@router.post("/login/passkey")
async def passkey_answer(
    request: Request, services: ServicesDep, staff: SecondFactorDep
) -> Response:
    credential = await _json(request)
    now = services.clock.now()

    def check() -> Response:
        try:
            passkeys.finish_authentication(
                services.db, services.relying_party, staff.user.id, staff.challenge, credential, now
            )
        except PasskeyError as exc:
            services.sign_in_throttle.failed(staff.user.email, _client(request), now)
            _audit_failure(services, "passkey", staff.user.email, user=staff.user.id)
            return JSONResponse({"problem": str(exc)}, status_code=400)
        redirect = _factor_passed(services, staff, "passkey")
        return JSONResponse({"next": redirect.headers["location"]})

    return await run_in_threadpool(check)


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Ends the session (whatever its stage) and forgets the cookie."""
    staff = await current(request, frozenset(Stage))
    services: Services = request.app.state.services
    now = services.clock.now()

    def end() -> None:
        staff_sessions.end(services.db, staff.id)
        with services.db.session() as session:
            audit.record(session, now, staff.user.actor, "signed_out", user=staff.user.id)

    await run_in_threadpool(end)
    response = RedirectResponse("/staff/login?m=signed_out", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _factor_passed(services: Services, staff: Current, method: str) -> RedirectResponse:
    """The second factor is proved: on to the next stage (usually the staff pages)."""
    user = staff_accounts.get_member(services.db, staff.user.id)
    stage = stage_after(services, user, factor_checked=True)
    staff_sessions.advance(services.db, staff.id, stage)
    if stage is Stage.ACTIVE:
        staff_accounts.signed_in(services.db, user.id, services.clock.now(), method=method)
    return RedirectResponse(STAGE_PAGES[stage], status_code=303)


def stage_after(services: Services, user: StaffMember, *, factor_checked: bool) -> Stage:
    return next_stage(
        factor_checked=factor_checked,
        has_factor=user.has_second_factor,
        must_change_password=user.must_change_password,
        factor_required=user.role in services.settings.second_factor_roles,
    )


def set_session_cookie(response: Response, services: Services, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        path="/",
        httponly=True,
        samesite="lax",
        secure=services.settings.https,
        # No max-age: the browser forgets it when it closes; the server enforces the timeouts.
    )


def _minutes(count: int) -> str:
    return f"{count} minute{'s' if count > 1 else ''}"


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _audit_failure(services: Services, step: str, email: str, *, user: int | None = None) -> None:
    """A failed sign-in, for the audit trail: the account when it exists, never the email."""
    now = services.clock.now()
    if user is None:
        with services.db.session() as session:
            found = staff_accounts.find(session, email)
            user = found.id if found is not None else None
    with services.db.session() as session:
        audit.record(session, now, "anonymous", "sign_in_failed", user=user, step=step)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise Forbidden("The security key's answer could not be read.") from None
    if not isinstance(body, dict):
        raise Forbidden("The security key's answer could not be read.")
    return body
