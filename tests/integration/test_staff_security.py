"""The staff surface from outside: nobody reads or changes anything without signing in, every
action checks the role and the CSRF token, sign-in resists guessing, sessions end when they
should, and every request gets the protective headers. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from campaigns import heartbeats, staff_accounts
from campaigns.bootstrap import Services, build
from campaigns.rules.clock import MovableClock
from campaigns.storage.models import AuditEvent, StaffSession
from campaigns.web.app import create_app
from tests.conftest import make_settings
from tests.integration.helpers import enroll, phone_of
from tests.integration.staff import PASSWORD, StaffClient, add_member, login_token, sign_in

#: Reachable without signing in (the sign-in page itself).
ANONYMOUS = {("GET", "/staff/login"), ("POST", "/staff/login")}


@pytest.fixture
def anonymous(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services), follow_redirects=False) as client:
        yield client


def _client(services: Services) -> TestClient:
    return TestClient(create_app(services), follow_redirects=False)


def staff_routes() -> list[tuple[str, str]]:
    """Every staff route of the app, as (method, path with example parameters)."""
    found = []
    for route in _app_routes():
        if not isinstance(route, APIRoute) or not route.path.startswith("/staff"):
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        path = path.replace("/enrollments/1/1", "/enrollments/1/pause")
        path = path.replace("/users/1/1", "/users/1/disable")
        assert route.methods is not None  # an APIRoute always has its methods
        for method in sorted(route.methods):
            found.append((method, path))
    return sorted(found)


def _app_routes() -> list[Any]:
    """Every route, including those of included routers (FastAPI includes them lazily)."""
    built = build(make_settings())
    try:
        found: list[Any] = []
        for route in create_app(built).routes:
            if hasattr(route, "effective_route_contexts"):
                found.extend(c.original_route for c in route.effective_route_contexts())
            else:
                found.append(route)
        return found
    finally:
        built.close()


ROUTES = staff_routes()


def audits(services: Services, action: str | None = None) -> list[AuditEvent]:
    with services.db.session() as session:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if action:
            query = query.where(AuditEvent.action == action)
        return list(session.execute(query).scalars())


def count_audits(services: Services) -> int:
    with services.db.session() as session:
        return int(session.execute(select(func.count()).select_from(AuditEvent)).scalar_one())


# -- every route -------------------------------------------------------------------------------


def test_the_walk_covers_every_kind_of_staff_route() -> None:
    paths = {path for _, path in ROUTES}
    assert {"/staff/", "/staff/patients/1", "/staff/users", "/staff/ops"} <= paths
    assert {"/staff/reports", "/staff/reports.csv"} <= paths
    assert ("POST", "/staff/enrollments/1/pause") in ROUTES
    # Campaigns: reading, running for everyone, editing a draft, its live check, sign-off.
    assert {
        ("GET", "/staff/campaigns/1"),
        ("POST", "/staff/campaigns/import"),
        ("POST", "/staff/campaigns/1/end"),
        ("POST", "/staff/campaigns/1/draft/steps/1"),
        ("POST", "/staff/campaigns/1/draft/check"),
        ("POST", "/staff/campaigns/1/draft/approve"),
    } <= set(ROUTES)
    assert {("POST", "/staff/broadcasts"), ("POST", "/staff/broadcasts/1/approve")} <= set(ROUTES)
    assert {("GET", "/staff/broadcasts/1"), ("POST", "/staff/broadcasts/1/cancel")} <= set(ROUTES)
    assert len(ROUTES) >= 30


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_staff_route_refuses_an_anonymous_request(
    anonymous: TestClient, services: Services, method: str, path: str
) -> None:
    if (method, path) in ANONYMOUS:
        pytest.skip("the sign-in page")
    before = count_audits(services)
    answer = anonymous.request(method, path, data={"csrf_token": "guess"})
    if method == "GET":
        assert answer.status_code == 303, (path, answer.status_code)
        assert answer.headers["location"].startswith("/staff/login")
    else:
        assert answer.status_code == 403, (path, answer.status_code)
        assert "not signed in" in answer.text
    assert count_audits(services) == before


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[0] == "POST"])
def test_every_state_changing_route_refuses_a_missing_or_foreign_token(
    anonymous: TestClient, services: Services, method: str, path: str
) -> None:
    if (method, path) in ANONYMOUS:
        pytest.skip("the sign-in form carries its own token (tested below)")
    if path.startswith("/staff/login/"):  # the second step's routes: a session at that step
        add_member(services, "admin")
        staff_accounts.enroll_totp(
            services.db, services.totp_box, "admin@clinic.example", services.clock.now(), actor="t"
        )
        _login(anonymous, "admin@clinic.example", PASSWORD)
        page = anonymous.get("/staff/login/code").text
        found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
        assert found
        csrf = found.group(1)
    else:
        csrf = sign_in(anonymous, services, "admin").csrf
    enroll(services, weeks=20)
    before = count_audits(services)
    missing = anonymous.post(path, data={})
    assert missing.status_code == 403, path
    assert "expired" in missing.text and "nothing was changed" in missing.text
    wrong = anonymous.post(path, data={"csrf_token": csrf[:-2] + "xx"})
    assert wrong.status_code == 403, path
    foreign = anonymous.post(
        path, data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403 and "another site" in foreign.text, path
    assert count_audits(services) == before


def test_metrics_need_an_operator_or_the_token(make_services: Any, database_url: str) -> None:
    services: Services = make_services(database_url, metrics_token="m" * 40)
    with _client(services) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        good = client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 40})
        assert good.status_code == 200 and "campaigns_due_messages" in good.text
    with _client(services) as client:
        sign_in(client, services, "clinician")
        assert client.get("/metrics").status_code == 403
    with _client(services) as client:
        sign_in(client, services, "operator")
        assert client.get("/metrics").status_code == 200
    # Health and readiness answer anyone: they name nothing. Readiness needs beat to have ticked.
    heartbeats.seen(services.db, heartbeats.Kind.BEAT, ["beat"], services.clock.now(), "test")
    with _client(services) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


# -- roles -------------------------------------------------------------------------------------

#: What each role gets for a representative request of each permission.
MATRIX = {
    "viewer": {"patient": 200, "enrol": 403, "pause": 403, "ops": 403, "users": 403, "bc": 403},
    "clinician": {"patient": 200, "enrol": 200, "pause": 303, "ops": 403, "users": 403, "bc": 200},
    "operator": {"patient": 403, "enrol": 403, "pause": 403, "ops": 200, "users": 403, "bc": 403},
    "admin": {"patient": 200, "enrol": 200, "pause": 303, "ops": 200, "users": 200, "bc": 200},
}
#: Reports are counts only: every role reads them and downloads their tables.
REPORTS = ("/staff/reports", "/staff/reports.csv?table=steps")


@pytest.mark.parametrize("role", list(MATRIX))
def test_each_role_may_do_what_the_table_says_and_nothing_else(
    services: Services, role: str
) -> None:
    done = enroll(services, weeks=20, name="Gia Example")
    with _client(services) as client:
        member = sign_in(client, services, role)
        home = member.get("/staff/").text
        answers = {
            "patient": member.get(f"/staff/patients/{done.patient_id}").status_code,
            "enrol": member.get("/staff/enrol").status_code,
            "pause": member.post(f"/staff/enrollments/{done.enrollment_id}/pause").status_code,
            "ops": member.get("/staff/ops").status_code,
            "users": member.get("/staff/users").status_code,
            "bc": member.get("/staff/broadcasts/new").status_code,  # writing a broadcast
        }
        assert answers == MATRIX[role]
        assert [member.get(path).status_code for path in REPORTS] == [200, 200]
    # What the role may not open, its pages do not offer; operators see no patient names.
    assert ("Gia Example" in home) is (role != "operator")
    assert ('href="/staff/users"' in home) is (role == "admin")
    paused = audits(services, "paused")
    assert bool(paused) is (role in {"clinician", "admin"})


def test_a_viewer_gets_no_action_buttons(services: Services) -> None:
    done = enroll(services, weeks=20)
    with _client(services) as client:
        viewer = sign_in(client, services, "viewer")
        page = viewer.get(f"/staff/patients/{done.patient_id}").text
    assert "Pause messages" not in page and "Stop everything" not in page
    assert "Change due date" not in page


def test_actions_and_views_are_audited_as_the_signed_in_member(services: Services) -> None:
    done = enroll(services, weeks=20)
    with _client(services) as client:
        clinician = sign_in(client, services, "clinician")
        clinician.get(f"/staff/patients/{done.patient_id}")
        clinician.post(f"/staff/enrollments/{done.enrollment_id}/pause")
    member = staff_accounts.list_all(services.db)[0]
    expected = f"staff:{member.id}:clinician@clinic.example"
    [viewed] = audits(services, "patient_viewed")
    assert (viewed.actor, viewed.patient_id, viewed.detail) == (
        expected,
        done.patient_id,
        {"page": "patient"},
    )
    [paused] = audits(services, "paused")
    assert paused.actor == expected
    [signed] = audits(services, "signed_in")
    assert signed.actor == expected and signed.detail == {"user": member.id, "method": "password"}


# -- signing in ----------------------------------------------------------------------------------


def _login(client: TestClient, email: str, password: str) -> Any:
    return client.post(
        "/staff/login",
        data={"email": email, "password": password, "csrf_token": login_token(client)},
    )


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(
    anonymous: TestClient, services: Services
) -> None:
    add_member(services, "viewer")
    wrong = _login(anonymous, "viewer@clinic.example", "not the password")
    unknown = _login(anonymous, "nobody@clinic.example", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    message = "The email address or password is not right."
    assert message in wrong.text and message in unknown.text
    assert "campaigns_staff" not in wrong.headers.get("set-cookie", "")
    failures = audits(services, "sign_in_failed")
    assert [f.detail["user"] for f in failures] == [1, None]
    assert all("nobody" not in str(f.detail) for f in failures)


def test_guessing_locks_the_account_with_a_clear_wait(
    anonymous: TestClient, services: Services
) -> None:
    add_member(services, "admin")
    for _ in range(5):
        assert _login(anonymous, "admin@clinic.example", "guess guess guess").status_code == 401
    locked = _login(anonymous, "Admin@Clinic.example", PASSWORD)  # even the right password
    assert locked.status_code == 429
    assert "Too many failed sign-ins. Try again in 15 minutes." in locked.text
    assert audits(services, "sign_in_failed")[-1].detail["step"] == "locked"
    assert isinstance(services.clock, MovableClock)
    services.clock.advance(timedelta(minutes=15))
    assert _login(anonymous, "admin@clinic.example", PASSWORD).status_code == 303


def test_the_sign_in_form_needs_its_own_token(anonymous: TestClient, services: Services) -> None:
    add_member(services, "admin")
    anonymous.get("/staff/login")
    forged = anonymous.post(
        "/staff/login",
        data={"email": "admin@clinic.example", "password": PASSWORD, "csrf_token": "x" * 40},
    )
    assert forged.status_code == 403 and "had expired" in forged.text
    from_elsewhere = anonymous.post(
        "/staff/login",
        data={
            "email": "admin@clinic.example",
            "password": PASSWORD,
            "csrf_token": login_token(anonymous),
        },
        headers={"Origin": "https://evil.example"},
    )
    assert from_elsewhere.status_code == 403


def test_a_one_time_password_must_be_changed_first(
    anonymous: TestClient, services: Services
) -> None:
    _, one_time = staff_accounts.add(
        services.db, "new@clinic.example", "clinician", services.clock.now(), actor="test"
    )
    assert one_time is not None
    signed = _login(anonymous, "new@clinic.example", one_time)
    assert signed.status_code == 303 and signed.headers["location"] == "/staff/password"
    assert anonymous.get("/staff/patients").headers["location"] == "/staff/password"
    page = anonymous.get("/staff/password").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    common = anonymous.post(
        "/staff/password",
        data={
            "csrf_token": token.group(1),
            "new_password": "password123",
            "confirm_password": "password123",
        },
    )
    assert common.status_code == 400 and "most common passwords" in common.text
    changed = anonymous.post(
        "/staff/password",
        data={
            "csrf_token": token.group(1),
            "new_password": "green tea and biscuits",
            "confirm_password": "green tea and biscuits",
        },
    )
    assert changed.status_code == 303 and changed.headers["location"] == "/staff/"
    assert anonymous.get("/staff/patients").status_code == 200
    assert staff_accounts.check_password(
        services.db, "new@clinic.example", "green tea and biscuits", services.clock.now()
    )


def test_sign_in_with_an_authenticator_code_accepts_each_code_once(
    anonymous: TestClient, services: Services, clock: MovableClock
) -> None:
    add_member(services, "clinician")
    enrolled = staff_accounts.enroll_totp(
        services.db, services.totp_box, "clinician@clinic.example", clock.now(), actor="test"
    )
    generator = pyotp.TOTP(enrolled.secret)
    signed = _login(anonymous, "clinician@clinic.example", PASSWORD)
    assert signed.headers["location"] == "/staff/login/code"
    # Nothing but the code page until the second step is done.
    assert anonymous.get("/staff/").headers["location"] == "/staff/login/code"
    page = anonymous.get("/staff/login/code").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    wrong = anonymous.post(
        "/staff/login/code", data={"csrf_token": token.group(1), "code": "000000"}
    )
    assert wrong.status_code == 401 and "not right" in wrong.text
    code = generator.at(clock.now())
    right = anonymous.post("/staff/login/code", data={"csrf_token": token.group(1), "code": code})
    assert right.status_code == 303 and right.headers["location"] == "/staff/"
    assert anonymous.get("/staff/patients").status_code == 200
    # The same code in another browser a moment later: refused.
    with _client(services) as other:
        _login(other, "clinician@clinic.example", PASSWORD)
        page = other.get("/staff/login/code").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token
        replayed = other.post(
            "/staff/login/code", data={"csrf_token": token.group(1), "code": code}
        )
        assert replayed.status_code == 401
        # A recovery code works once.
        recovery = enrolled.recovery_codes[0]
        used = other.post(
            "/staff/login/code", data={"csrf_token": token.group(1), "code": recovery}
        )
        assert used.status_code == 303
    assert staff_accounts.recovery_codes_left(services.db, 1) == 9
    assert not staff_accounts.use_recovery_code(services.db, 1, recovery, clock.now())


def test_a_role_that_needs_a_second_factor_sets_one_up_before_anything_else(
    make_services: Any, database_url: str, clock: MovableClock
) -> None:
    services: Services = make_services(database_url, require_2fa="admin")
    add_member(services, "admin")
    with _client(services) as client:
        signed = _login(client, "admin@clinic.example", PASSWORD)
        assert signed.headers["location"] == "/staff/security"
        assert client.get("/staff/users").headers["location"] == "/staff/security"
        page = client.get("/staff/security").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token and "Set up a second step" in page
        started = client.post("/staff/security/totp", data={"csrf_token": token.group(1)})
        assert started.status_code == 200 and "data:image/svg+xml" in started.text
        key = re.search(r'<code class="secret">([A-Z2-7 ]+)</code>', started.text)
        assert key
        secret = key.group(1).replace(" ", "")
        code = pyotp.TOTP(secret).at(clock.now())
        shown = client.post(
            "/staff/security/totp/confirm", data={"csrf_token": token.group(1), "code": code}
        )
        assert shown.status_code == 200 and "Your recovery codes" in shown.text
        assert len(re.findall(r"<li><code>[a-z0-9-]+</code></li>", shown.text)) == 10
        assert client.get("/staff/users").status_code == 200
    [user] = staff_accounts.list_all(services.db)
    assert user.has_totp
    # The secret is sealed in the database, never in clear.
    with services.db.session() as session:
        from campaigns.storage.models import StaffUser

        stored = session.execute(select(StaffUser.totp_secret_sealed)).scalar_one()
        assert stored and secret not in stored


# -- sessions -----------------------------------------------------------------------------------


def test_a_session_ends_after_idle_time_and_after_its_absolute_limit(
    services: Services, clock: MovableClock
) -> None:
    with _client(services) as client:
        member = sign_in(client, services, "viewer")
        clock.advance(timedelta(minutes=29))
        assert member.get("/staff/patients").status_code == 200
        clock.advance(timedelta(minutes=31))
        assert member.get("/staff/patients").headers["location"].startswith("/staff/login")
    with _client(services) as client:
        member = StaffClient(client, "viewer@clinic.example")
        for _ in range(12 * 3):  # busy all day: a request every 20 minutes for 12 hours
            assert member.get("/staff/patients").status_code == 200
            clock.advance(timedelta(minutes=20))
        assert member.get("/staff/patients").status_code == 303


def test_disabling_an_account_or_a_new_password_ends_its_sessions(
    services: Services, clock: MovableClock
) -> None:
    with _client(services) as first, _client(services) as second:
        one = sign_in(first, services, "clinician")
        two = StaffClient(second, "clinician@clinic.example")
        page = one.get("/staff/password").text
        assert "Current password" in page
        changed = one.post(
            "/staff/password",
            data={
                "current_password": PASSWORD,
                "new_password": "a different long phrase",
                "confirm_password": "a different long phrase",
            },
        )
        assert changed.status_code == 303
        assert one.get("/staff/patients").status_code == 200  # the browser that changed it
        assert two.get("/staff/patients").status_code == 303  # every other one: signed out
        staff_accounts.disable(services.db, "clinician@clinic.example", clock.now(), actor="test")
        assert one.get("/staff/patients").status_code == 303
    with services.db.session() as session:
        assert session.execute(select(func.count()).select_from(StaffSession)).scalar_one() == 0


def test_signing_out_ends_the_session_on_the_server(services: Services) -> None:
    with _client(services) as client:
        member = sign_in(client, services, "viewer")
        cookie = client.cookies.get("campaigns_staff")
        out = member.post("/staff/logout")
        assert out.status_code == 303 and out.headers["location"] == "/staff/login?m=signed_out"
        assert "You have signed out." in client.get("/staff/login?m=signed_out").text
    with _client(services) as replay:  # the old cookie, kept by someone: it opens nothing
        replay.cookies.set("campaigns_staff", cookie or "")
        assert replay.get("/staff/patients").status_code == 303


def test_session_cookies_are_http_only_lax_and_secure_on_https(
    make_services: Any, database_url: str
) -> None:
    services: Services = make_services(database_url, public_url="https://sms.clinic.example")
    add_member(services, "viewer")
    with TestClient(
        create_app(services), base_url="https://sms.clinic.example", follow_redirects=False
    ) as client:
        signed = _login(client, "viewer@clinic.example", PASSWORD)
    cookie = signed.headers["set-cookie"]
    assert "campaigns_staff=" in cookie and "HttpOnly" in cookie
    assert "SameSite=lax" in cookie and "Secure" in cookie
    assert "strict-transport-security" in signed.headers


# -- what every request gets --------------------------------------------------------------------


def test_a_request_for_another_host_is_refused(anonymous: TestClient) -> None:
    answer = anonymous.get("/staff/login", headers={"Host": "attacker.example"})
    assert answer.status_code == 400
    assert anonymous.get("/healthz", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert anonymous.get("/healthz", headers={"Host": "localhost"}).status_code == 200


def test_pages_carry_the_protective_headers(anonymous: TestClient, services: Services) -> None:
    member = sign_in(anonymous, services, "admin")
    page = member.get("/staff/patients")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text  # no inline script anywhere on staff pages
    link = anonymous.get("/u/not-a-token")
    assert link.headers["referrer-policy"] == "no-referrer"  # links pages keep theirs
    assert "strict-transport-security" not in page.headers  # http here


def test_notices_never_come_from_the_url(anonymous: TestClient, services: Services) -> None:
    member = sign_in(anonymous, services, "admin")
    page = member.get("/staff/?notice=Call+0900+now&problem=Your+account+is+locked")
    assert "0900" not in page.text and "locked" not in page.text
    login = anonymous.get("/staff/login?m=<b>hi</b>")
    assert "<b>hi" not in login.text and "&lt;b&gt;" not in login.text


@pytest.mark.parametrize(
    "token",
    ["%C3%A9t%C3%A9", "AAAA", "!!!!", "a" * 300, "eyJwIjoidW5zdWJzY3JpYmUifQ.%FF", "x.y.z", "%00"],
)
def test_malformed_link_tokens_are_a_400_never_a_500(anonymous: TestClient, token: str) -> None:
    for method, path in (("GET", f"/b/{token}"), ("GET", f"/u/{token}"), ("POST", f"/u/{token}")):
        answer = anonymous.request(method, path)
        assert answer.status_code == 400, (method, path, answer.status_code)


def test_the_access_log_names_routes_not_tokens_numbers_or_emails(
    anonymous: TestClient, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    done = enroll(services, weeks=20, email="private.person@example.com")
    phone = phone_of(services, done.patient_id)
    member = sign_in(anonymous, services, "admin")
    link = services.links.booking_url(done.patient_id, services.clock.now())
    token = link.rsplit("/", 1)[1]
    with caplog.at_level(logging.INFO, logger="campaigns.access"):
        member.get("/staff/patients", params={"q": phone})
        member.get("/staff/patients", params={"q": "private.person@example.com"})
        anonymous.get(f"/b/{token}")
        anonymous.get("/u/some.token")
        member.post(f"/staff/enrollments/{done.enrollment_id}/pause")
    lines = [r.getMessage() for r in caplog.records if r.name == "campaigns.access"]
    assert any(line.startswith("GET /staff/patients 200") for line in lines), lines
    assert any(line.startswith("GET /b/{token} 303") for line in lines), lines
    assert any("user=1" in line for line in lines)
    text = "\n".join(lines)
    for secret in (token, phone, phone[-9:], "private.person", "some.token", member.csrf):
        assert secret not in text


def test_upkeep_deletes_sessions_past_their_timeouts(
    services: Services, clock: MovableClock
) -> None:
    from campaigns import runtime

    with _client(services) as client:
        sign_in(client, services, "viewer")
    with _client(services) as client:
        StaffClient(client, "viewer@clinic.example")
    clock.advance(timedelta(minutes=20))
    runtime.upkeep_now(services)
    with services.db.session() as session:
        assert session.execute(select(func.count()).select_from(StaffSession)).scalar_one() == 2
    clock.advance(timedelta(minutes=11))
    runtime.upkeep_now(services)
    with services.db.session() as session:
        assert session.execute(select(func.count()).select_from(StaffSession)).scalar_one() == 0
