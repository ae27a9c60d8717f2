"""One's own account: change the password, set up an authenticator app or a security key,
make new recovery codes. Also where sign-in continues when the account must change a one-time
password or set up the second factor its role needs.

Recovery codes are shown once, in the answer to the request that made them, and kept only as
hashes: they are never put in a notice, a URL or the session.
"""

from __future__ import annotations

from typing import Annotated, Any

import segno
from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from campaigns import passkeys, staff_accounts, staff_sessions
from campaigns.bootstrap import Services
from campaigns.passkeys import PasskeyError
from campaigns.rules import totp
from campaigns.rules.errors import InputError, by_field
from campaigns.staff_sessions import Current, Stage
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import STAGE_PAGES, Forbidden, current
from campaigns.web.pages import back, render
from campaigns.web.signin import stage_after

router = APIRouter(prefix="/staff", include_in_schema=False)


async def _password_session(request: Request) -> Current:
    return await current(request, frozenset({Stage.CHANGE_PASSWORD, Stage.ACTIVE}))


async def _security_session(request: Request) -> Current:
    return await current(request, frozenset({Stage.SETUP_2FA, Stage.ACTIVE}))


PasswordDep = Annotated[Current, Depends(_password_session)]
SecurityDep = Annotated[Current, Depends(_security_session)]


@router.get("/password", response_class=HTMLResponse)
def password_form(request: Request, staff: PasswordDep) -> Response:
    return render(request, "password.html", forced=staff.stage is Stage.CHANGE_PASSWORD, errors={})


@router.post("/password", response_class=HTMLResponse)
def change_password(
    request: Request,
    services: ServicesDep,
    staff: PasswordDep,
    current_password: Annotated[str, Form(max_length=1024)] = "",
    new_password: Annotated[str, Form(max_length=1024)] = "",
    confirm_password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    forced = staff.stage is Stage.CHANGE_PASSWORD
    try:
        if new_password != confirm_password:
            raise InputError("confirm_password", "the two new passwords are not the same")
        staff_accounts.change_password(
            services.db,
            staff.user.id,
            None if forced else current_password,
            new_password,
            services.clock.now(),
            keep_session=staff.id,
        )
    except InputError as exc:
        return render(
            request, "password.html", forced=forced, errors=by_field(exc), status_code=400
        )
    if forced:
        return _continue(services, staff)
    return back(request, "/staff/security", notice="Your password was changed.")


@router.get("/security", response_class=HTMLResponse)
def security(request: Request, services: ServicesDep, staff: SecurityDep) -> Response:
    return _security_page(request, services, staff)


def _security_page(
    request: Request, services: Services, staff: Current, **extra: Any
) -> HTMLResponse:
    return render(
        request,
        "security.html",
        user=staff_accounts.get_member(services.db, staff.user.id),
        setup=staff.stage is Stage.SETUP_2FA,
        keys=passkeys.listed(services.db, staff.user.id),
        passkeys_usable=services.relying_party.usable,
        codes_left=staff_accounts.recovery_codes_left(services.db, staff.user.id),
        **extra,
    )


@router.post("/security/totp", response_class=HTMLResponse)
def start_totp(request: Request, services: ServicesDep, staff: SecurityDep) -> Response:
    """A new secret to scan; it replaces the old one only once a code from it is given."""
    secret, sealed, uri = staff_accounts.start_totp(services.totp_box, staff.user.email)
    staff_sessions.set_pending_totp(services.db, staff.id, sealed)
    return _totp_page(request, secret, uri)


def _totp_page(
    request: Request, secret: str, uri: str, *, problem: str | None = None, status_code: int = 200
) -> HTMLResponse:
    qr = segno.make(uri, error="m").svg_data_uri(scale=5, border=2)
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return render(
        request,
        "totp.html",
        qr=qr,
        secret=grouped,
        problem=problem,
        status_code=status_code,
    )


@router.post("/security/totp/confirm", response_class=HTMLResponse)
def confirm_totp(
    request: Request,
    services: ServicesDep,
    staff: SecurityDep,
    code: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    if staff.pending_totp_sealed is None:
        return back(request, "/staff/security", problem="Start again: set up an authenticator app.")
    codes = staff_accounts.confirm_totp(
        services.db,
        services.totp_box,
        staff.user.id,
        staff.pending_totp_sealed,
        code,
        services.clock.now(),
    )
    if codes is None:
        secret = services.totp_box.open(staff.pending_totp_sealed)
        uri = totp.provisioning_uri(secret, staff.user.email)
        return _totp_page(
            request,
            secret,
            uri,
            problem="That code is not right. Check the app shows this account; try the next code.",
            status_code=400,
        )
    staff_sessions.set_pending_totp(services.db, staff.id, None)
    return _codes_page(request, services, staff, codes)


@router.post("/security/passkeys/options")
def passkey_options(services: ServicesDep, staff: SecurityDep) -> Response:
    rp = services.relying_party
    if not rp.usable:
        return JSONResponse({"problem": "Security keys need the service's https address."}, 400)
    options, challenge = passkeys.registration_options(services.db, rp, staff.user.id)
    staff_sessions.set_challenge(services.db, staff.id, challenge)
    return JSONResponse(options)


@router.post("/security/passkeys")
async def add_passkey(request: Request, services: ServicesDep, staff: SecurityDep) -> Response:
    try:
        body = await request.json()
    except ValueError:
        raise Forbidden("The security key's answer could not be read.") from None
    if not isinstance(body, dict) or not isinstance(body.get("credential"), dict):
        raise Forbidden("The security key's answer could not be read.")
    name = str(body.get("name") or "")

    def add() -> Response:
        now = services.clock.now()
        try:
            passkeys.finish_registration(
                services.db,
                services.relying_party,
                staff.user.id,
                staff.challenge,
                body["credential"],
                name,
                now,
            )
        except PasskeyError as exc:
            return JSONResponse({"problem": str(exc)}, status_code=400)
        staff_sessions.set_challenge(services.db, staff.id, None)
        answer: dict[str, Any] = {"next": "/staff/security"}
        if staff_accounts.recovery_codes_left(services.db, staff.user.id) == 0:
            answer["recovery_codes"] = staff_accounts.new_recovery_codes(
                services.db, staff.user.id, now
            )
        if staff.stage is Stage.SETUP_2FA:
            answer["next"] = _continue(services, staff).headers["location"]
        return JSONResponse(answer)

    return await run_in_threadpool(add)


@router.post("/security/passkeys/{passkey_id}/remove")
def remove_passkey(
    request: Request, services: ServicesDep, staff: SecurityDep, passkey_id: int
) -> Response:
    try:
        passkeys.remove(
            services.db, staff.user.id, passkey_id, services.clock.now(), actor=staff.user.actor
        )
    except InputError as exc:
        return back(request, "/staff/security", problem=exc.message)
    return back(request, "/staff/security", notice="The security key was removed.")


@router.post("/security/recovery-codes", response_class=HTMLResponse)
def recovery_codes(request: Request, services: ServicesDep, staff: SecurityDep) -> Response:
    codes = staff_accounts.new_recovery_codes(services.db, staff.user.id, services.clock.now())
    return _codes_page(request, services, staff, codes)


def _codes_page(
    request: Request, services: Services, staff: Current, codes: list[str]
) -> HTMLResponse:
    target = "/staff/security"
    if staff.stage is Stage.SETUP_2FA:
        target = _continue(services, staff).headers["location"]
    return render(request, "recovery_codes.html", codes=codes, target=target)


def _continue(services: Services, staff: Current) -> RedirectResponse:
    """Sign-in goes on from a forced step to the next one (usually the staff pages)."""
    user = staff_accounts.get_member(services.db, staff.user.id)
    stage = stage_after(services, user, factor_checked=True)
    staff_sessions.advance(services.db, staff.id, stage)
    if stage is Stage.ACTIVE:
        staff_accounts.signed_in(services.db, user.id, services.clock.now(), method="setup")
    return RedirectResponse(STAGE_PAGES[stage], status_code=303)
