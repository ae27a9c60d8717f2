"""Staff accounts, for admins: add someone, change a role, disable or enable, reset a password
or a lost second factor. The same operations as `campaigns users` (campaigns.staff_accounts).

A one-time password is shown once, in the answer to the request that made it; it is never put
in a notice, a URL or the session.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from campaigns import staff_accounts
from campaigns.rules.errors import InputError, NotFoundError, StateError
from campaigns.rules.roles import Permission, Role
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.pages import back, render

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])


def _list(
    request: Request, services: ServicesDep, *, status_code: int = 200, **extra: object
) -> HTMLResponse:
    return render(
        request,
        "users.html",
        status_code=status_code,
        users=staff_accounts.list_all(services.db),
        roles=[r.value for r in Role],
        second_factor_roles={r.value for r in services.settings.second_factor_roles},
        **extra,
    )


@router.get("/users", response_class=HTMLResponse)
@requires(Permission.MANAGE_USERS)
def users(request: Request, services: ServicesDep) -> Response:
    return _list(request, services, values={}, error=None)


@router.post("/users", response_class=HTMLResponse)
@requires(Permission.MANAGE_USERS)
def add_user(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    email: Annotated[str, Form(max_length=320)] = "",
    name: Annotated[str, Form(max_length=300)] = "",
    role: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    try:
        added, one_time = staff_accounts.add(
            services.db, email, role, services.clock.now(), actor=staff.user.actor, name=name
        )
    except InputError as exc:
        values = {"email": email, "name": name, "role": role}
        return _list(request, services, values=values, error=exc, status_code=400)
    return render(request, "one_time_password.html", member=added, password=one_time, new=True)


@router.post("/users/{user_id}/{action}", response_class=HTMLResponse)
@requires(Permission.MANAGE_USERS)
def user_action(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    user_id: int,
    action: str,
    role: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    try:
        target = staff_accounts.get_member(services.db, user_id)
    except NotFoundError:
        raise HTTPException(404, "no such staff account") from None
    now, actor = services.clock.now(), staff.user.actor
    if target.id == staff.user.id and action in {"disable", "role", "reset-2fa"}:
        return back(
            request,
            "/staff/users",
            problem="Ask another admin to change your own access (so an admin always remains).",
        )
    try:
        if action == "disable":
            staff_accounts.disable(services.db, target.email, now, actor=actor)
            notice = f"{target.email} is disabled and signed out everywhere."
        elif action == "enable":
            staff_accounts.enable(services.db, target.email, now, actor=actor)
            notice = f"{target.email} can sign in again."
        elif action == "role":
            changed = staff_accounts.set_role(services.db, target.email, role, now, actor=actor)
            notice = f"{target.email} is now {changed.role.value}; they sign in again."
        elif action == "reset-2fa":
            staff_accounts.reset_2fa(services.db, target.email, now, actor=actor)
            notice = f"{target.email}'s second factor was removed; they set up a new one."
        elif action == "reset-password":
            one_time = staff_accounts.reset_password(services.db, target.email, now, actor=actor)
            return render(
                request, "one_time_password.html", member=target, password=one_time, new=False
            )
        else:
            raise HTTPException(404, "no such action")
    except (InputError, StateError) as exc:
        return back(request, "/staff/users", problem=str(exc))
    return back(request, "/staff/users", notice=notice)
