"""Staff accounts from the command line and the admin's page; the operator's page; the sign-in
throttle on real Redis; a huge request body refused as it arrives."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import select

from campaigns import halts, staff_accounts
from campaigns.bootstrap import Services
from campaigns.rules.errors import InputError, NotFoundError, StateError
from campaigns.rules.vocabulary import Channel, MessageStatus
from campaigns.sign_in_throttle import Limits, RedisCounter, Throttle
from campaigns.storage.db import Database
from campaigns.storage.models import AuditEvent, ScheduledMessage, StaffUser
from campaigns.web.app import create_app
from tests.conftest import REDIS_URL
from tests.integration.helpers import enroll, rows
from tests.integration.processes import campaigns, env_with, free_port, spawn, stop
from tests.integration.staff import PASSWORD, StaffClient, sign_in


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = env_with(CAMPAIGNS_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}")
    assert campaigns("migrate", env=environment).returncode == 0
    return environment


def users_in(env: dict[str, str]) -> list[StaffUser]:
    db = Database.from_url(env["CAMPAIGNS_DATABASE_URL"])
    try:
        with db.session() as session:
            return list(session.execute(select(StaffUser).order_by(StaffUser.id)).scalars())
    finally:
        db.dispose()


# -- campaigns users ---------------------------------------------------------------------------


def test_users_commands_manage_an_account_from_start_to_end(env: dict[str, str]) -> None:
    added = campaigns("users", "add", "Ana@Clinic.example", "--role", "clinician", env=env)
    assert added.returncode == 0, added.stderr
    one_time = re.search(r"one-time password .*: (\S+)", added.stdout)
    assert one_time and "added ana@clinic.example (clinician)" in added.stdout
    [user] = users_in(env)
    assert user.must_change_password and one_time.group(1) not in user.password_hash
    listed = json.loads(campaigns("users", "list", "--json", env=env).stdout)
    assert listed == [
        {
            "email": "ana@clinic.example",
            "name": "ana",
            "role": "clinician",
            "totp": False,
            "passkeys": 0,
            "disabled": False,
            "last_login_at": None,
        }
    ]
    totp = campaigns("users", "totp", "ana@clinic.example", env=env)
    assert totp.returncode == 0 and "otpauth://totp/" in totp.stdout
    secret = re.search(r"key: ([A-Z2-7]+)", totp.stdout)
    assert secret and secret.group(1) not in (users_in(env)[0].totp_secret_sealed or "")
    assert len(re.findall(r"^  [a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{2}$", totp.stdout, re.M)) == 10
    role = campaigns("users", "set-role", "ana@clinic.example", "admin", env=env)
    assert role.returncode == 0 and "is now admin" in role.stdout
    reset = campaigns("users", "reset-password", "ana@clinic.example", env=env)
    assert reset.returncode == 0 and "one-time password" in reset.stdout
    assert campaigns("users", "reset-2fa", "ana@clinic.example", env=env).returncode == 0
    assert users_in(env)[0].totp_secret_sealed is None
    assert campaigns("users", "disable", "ana@clinic.example", env=env).returncode == 0
    again = campaigns("users", "disable", "ana@clinic.example", env=env)
    assert again.returncode == 1 and "already disabled" in again.stderr
    assert campaigns("users", "enable", "ana@clinic.example", env=env).returncode == 0
    db = Database.from_url(env["CAMPAIGNS_DATABASE_URL"])
    with db.session() as session:
        actions = list(session.execute(select(AuditEvent.action, AuditEvent.actor)).all())
    db.dispose()
    assert [a for a, _ in actions] == [
        "staff_user_added",
        "staff_2fa_enrolled",
        "staff_role_changed",
        "staff_password_reset",
        "staff_2fa_reset",
        "staff_user_disabled",
        "staff_user_enabled",
    ]
    assert {actor for _, actor in actions} == {"cli"}


def test_a_password_from_stdin_is_checked_and_used(env: dict[str, str]) -> None:
    weak = campaigns(
        "users",
        "add",
        "bo@clinic.example",
        "--role",
        "viewer",
        "--password-stdin",
        env=env,
        input="password123\n",
    )
    assert weak.returncode == 2 and "password: this is one of the most common" in weak.stderr
    assert users_in(env) == []  # nothing half-written
    good = campaigns(
        "users",
        "add",
        "bo@clinic.example",
        "--role",
        "viewer",
        "--password-stdin",
        env=env,
        input="blue kettle under the stairs\n",
    )
    assert good.returncode == 0 and "one-time" not in good.stdout
    assert users_in(env)[0].must_change_password is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "not-an-email", "--role", "viewer"), "email: "),
        (("add", "cy@clinic.example", "--role", "doctor"), "role: 'doctor' is not a role"),
        (("set-role", "nobody@clinic.example", "viewer"), "no staff account"),
        (("disable", "nobody@clinic.example"), "no staff account"),
    ],
)
def test_users_commands_name_what_is_wrong_and_write_nothing(
    env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    result = campaigns("users", *args, env=env)
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr
    assert users_in(env) == []


def test_an_email_has_one_account_whatever_its_case(env: dict[str, str]) -> None:
    assert (
        campaigns("users", "add", "dee@clinic.example", "--role", "viewer", env=env).returncode == 0
    )
    twice = campaigns("users", "add", "DEE@clinic.example", "--role", "admin", env=env)
    assert twice.returncode == 2 and "email: dee@clinic.example already has" in twice.stderr
    assert len(users_in(env)) == 1


def test_the_demo_seed_makes_an_admin_once_and_prints_its_password(env: dict[str, str]) -> None:
    first = campaigns("demo", "--seed", env=env)
    assert first.returncode == 0, first.stderr
    shown = re.search(r"Sign in as (\S+) with the password (\S+) \(shown only now\)", first.stdout)
    assert shown and shown.group(1) == "admin@santi.example"
    again = campaigns("demo", "--seed", env=env)
    assert shown.group(2) not in again.stdout
    assert "campaigns users reset-password admin@santi.example" in again.stdout
    [admin] = users_in(env)
    assert admin.role == "admin" and not admin.must_change_password


# -- the admin's page ---------------------------------------------------------------------------


@pytest.fixture
def admin(services: Services) -> Iterator[StaffClient]:
    with TestClient(create_app(services), follow_redirects=False) as client:
        yield sign_in(client, services, "admin")


def test_an_admin_adds_someone_and_sees_the_one_time_password_once(
    admin: StaffClient, services: Services
) -> None:
    bad = admin.post("/staff/users", data={"email": "nope", "name": "X", "role": "viewer"})
    assert bad.status_code == 400 and "Please check email" in bad.text
    added = admin.post(
        "/staff/users", data={"email": "eve@clinic.example", "name": "Eve", "role": "clinician"}
    )
    assert added.status_code == 200
    password = re.search(r'<p class="secret-box"><code>([a-z0-9]+)</code></p>', added.text)
    assert password
    assert staff_accounts.check_password(
        services.db, "eve@clinic.example", password.group(1), services.clock.now()
    )
    # The password is in that answer only: not in the session, not in the next page.
    listing = admin.get("/staff/users").text
    assert password.group(1) not in listing and "eve@clinic.example" in listing


def test_an_admin_changes_roles_and_disables_but_not_their_own(
    admin: StaffClient, services: Services
) -> None:
    staff_accounts.add(
        services.db,
        "fin@clinic.example",
        "viewer",
        services.clock.now(),
        actor="test",
        password=PASSWORD,
    )
    fin = next(u for u in staff_accounts.list_all(services.db) if u.email == "fin@clinic.example")
    me = next(u for u in staff_accounts.list_all(services.db) if u.email == "admin@clinic.example")
    changed = admin.post(f"/staff/users/{fin.id}/role", data={"role": "clinician"})
    assert "fin@clinic.example is now clinician" in admin.get(changed.headers["location"]).text
    admin.post(f"/staff/users/{fin.id}/disable")
    assert staff_accounts.get_member(services.db, fin.id).disabled_at is not None
    mine = admin.post(f"/staff/users/{me.id}/disable")
    assert "Ask another admin" in admin.get(mine.headers["location"]).text
    assert staff_accounts.get_member(services.db, me.id).disabled_at is None
    assert admin.post("/staff/users/999/disable").status_code == 404
    reset = admin.post(f"/staff/users/{fin.id}/reset-password")
    assert reset.status_code == 200 and "Password reset" in reset.text


def test_account_rules_refuse_clearly(services: Services) -> None:
    now = services.clock.now()
    with pytest.raises(InputError, match="name: use at most 200"):
        staff_accounts.add(
            services.db, "g@clinic.example", "viewer", now, actor="t", name="x" * 300
        )
    with pytest.raises(NotFoundError):
        staff_accounts.reset_password(services.db, "nobody@clinic.example", now, actor="t")
    staff_accounts.add(services.db, "g@clinic.example", "viewer", now, actor="t", password=PASSWORD)
    with pytest.raises(StateError, match="already viewer"):
        staff_accounts.set_role(services.db, "g@clinic.example", "viewer", now, actor="t")
    with pytest.raises(InputError, match="current_password"):
        staff_accounts.change_password(services.db, 1, "wrong", "a brand new phrase", now)
    with pytest.raises(InputError, match="not just used"):
        staff_accounts.change_password(services.db, 1, PASSWORD, PASSWORD, now)


# -- the operator's page ------------------------------------------------------------------------


def test_an_operator_resumes_a_channel_and_requeues_failed_messages(services: Services) -> None:
    done = enroll(services, weeks=20)
    [first, *_] = rows(services, done.enrollment_id)
    with services.db.session() as session:
        failed = session.get(ScheduledMessage, first.id)
        assert failed is not None
        failed.status = MessageStatus.FAILED
    halts.halt(services.db, Channel.SMS, "twilio", "20003", "bad credentials", services.clock.now())
    with TestClient(create_app(services), follow_redirects=False) as client:
        operator = sign_in(client, services, "operator")
        page = operator.get("/staff/ops").text
        assert "SMS sending is stopped" in page and "Send the 1 failed messages again" in page
        assert "Test Patient" not in page and "+447" not in page  # counts, never patients
        resumed = operator.post("/staff/ops/channels/sms/resume")
        assert "SMS sending resumed." in operator.get(resumed.headers["location"]).text
        requeued = operator.post("/staff/ops/requeue-failed")
        assert (
            "1 failed messages are queued again." in operator.get(requeued.headers["location"]).text
        )
    assert halts.halted(services.db) == {}
    assert next(r for r in rows(services) if r.id == first.id).status == "pending"


# -- the throttle on Redis ---------------------------------------------------------------------


@pytest.mark.redis
def test_failed_sign_ins_are_counted_in_redis_and_expire_there() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    limits = Limits(account_failures=3, address_failures=50, window=timedelta(minutes=10))
    throttle = Throttle(limits, RedisCounter(client))
    now = datetime.now(UTC)
    for _ in range(3):
        throttle.failed("ana@clinic.example", "10.0.0.9", now)
    assert throttle.minutes_locked("ana@clinic.example", "10.0.0.2", now) == 10
    # Another web process reads the same count.
    assert (
        Throttle(limits, RedisCounter(redis.Redis.from_url(REDIS_URL))).minutes_locked(
            "ana@clinic.example", "10.0.0.3", now
        )
        == 10
    )
    # Redis keeps each count for the window and no longer: every key carries that expiry (read
    # from Redis, not waited for on the clock) and none names the account.
    keys = client.keys("*")
    assert len(keys) == 2  # the account's and the address's
    assert all(0 < client.pttl(key) <= 10 * 60 * 1000 for key in keys)
    assert not any(b"ana" in key for key in keys)
    for key in keys:
        client.pexpire(key, 0)  # the window is over: Redis drops the counts
    assert throttle.minutes_locked("ana@clinic.example", "10.0.0.2", now) == 0
    client.flushdb()


def test_an_unreachable_redis_falls_back_to_the_database(services: Services) -> None:
    from campaigns.sign_in_throttle import DatabaseCounter

    dead = redis.Redis(
        port=free_port(),
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    limits = Limits(account_failures=2, address_failures=50, window=timedelta(minutes=15))
    throttle = Throttle(limits, RedisCounter(dead), fallback=DatabaseCounter(services.db))
    now = services.clock.now()
    throttle.failed("ana@clinic.example", "10.0.0.9", now)
    throttle.failed("ana@clinic.example", "10.0.0.9", now)
    assert throttle.minutes_locked("ana@clinic.example", "10.0.0.1", now) == 15


# -- huge bodies -------------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_a_300_mb_chunked_body_is_refused_as_it_arrives(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    server = spawn(
        [str(Path(".venv/bin/campaigns").resolve()), "serve", "--port", str(port)],
        env,
        tmp_path / "serve.log",
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        before = _rss_kb(server.pid)
        sent, answer = _send_chunked(port, "/webhooks/sendgrid/events", 300 * 1024 * 1024)
        after = _rss_kb(server.pid)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert sent < 50 * 1024 * 1024  # refused long before the end
        assert after - before < 16 * 1024, f"the server grew by {after - before} kB"
    finally:
        stop(server)


def _send_chunked(port: int, path: str, total: int) -> tuple[int, bytes]:
    """Send up to `total` bytes as a chunked POST; stop when the server answers or hangs up.
    Returns how much was sent and the answer's first bytes."""
    chunk = b"x" * 65536
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sent = 0
        conn.setblocking(False)
        answer = b""
        while sent < total:
            try:
                answer += conn.recv(4096)
                if answer:
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            try:
                conn.setblocking(True)
                conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                conn.setblocking(False)
            except OSError:
                break
            sent += len(chunk)
        conn.setblocking(True)
        conn.settimeout(10)
        try:
            while len(answer) < 12:
                more = conn.recv(4096)
                if not more:
                    break
                answer += more
        except OSError:
            pass
    return sent, answer
