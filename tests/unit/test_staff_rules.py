"""The rules behind staff sign-in, without a database: passwords, TOTP, recovery codes, roles,
sign-in stages, the failed sign-in throttle, sealed secrets, production secrets, redirects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher

from campaigns.rules import passwords, totp
from campaigns.rules.errors import InputError
from campaigns.rules.roles import GRANTS, Permission, Role, may, parse_role
from campaigns.rules.secretbox import SealedSecretError, SecretBox
from campaigns.sandbox.credentials import TEST_AUTH_TOKEN
from campaigns.settings import Settings, estimated_bits
from campaigns.sign_in_throttle import Limits, Throttle, account_key, address_key
from campaigns.staff_sessions import Stage, next_stage
from campaigns.web.guard import safe_next

NOW = datetime(2026, 3, 2, 9, 30, 7, tzinfo=UTC)
GOOD_SECRET = "Vq3xM9-pLw2Rt7_kZb4Yh8NcJd6Fs1GeUa5TnQrXoP0iBy"

# -- passwords -------------------------------------------------------------------------------


def test_a_password_is_stored_as_argon2id_and_checked() -> None:
    stored = passwords.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert passwords.verify(stored, "correct horse battery")
    assert not passwords.verify(stored, "correct horse batterY")
    assert not passwords.verify(None, "anything at all")  # an unknown account
    assert not passwords.verify("not a hash", "anything at all")


def test_a_hash_made_with_older_parameters_is_marked_for_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("secret words")
    assert passwords.verify(weak, "secret words")
    assert passwords.needs_rehash(weak)
    assert not passwords.needs_rehash(passwords.hash_password("secret words"))


@pytest.mark.parametrize(
    ("candidate", "why"),
    [
        ("short", "at least 10"),
        ("password123", "most common"),
        ("qwertyuiop", "most common"),
        ("ana.smith@clinic.example", "email"),
        ("aaaaaaaaaaaaaa", "different characters"),
        ("x" * 300, "at most"),
    ],
)
def test_weak_new_passwords_are_refused_with_the_reason(candidate: str, why: str) -> None:
    with pytest.raises(InputError) as refused:
        passwords.check_new(candidate, email="ana.smith@clinic.example")
    assert refused.value.field == "new_password" and why in refused.value.message


def test_a_good_password_and_a_one_time_password_pass() -> None:
    passwords.check_new("blue kettle under the stairs")
    made = {passwords.one_time() for _ in range(50)}
    assert len(made) == 50 and all(len(p) == 16 for p in made)
    for one in made:
        passwords.check_new(one)


def test_the_common_list_holds_ten_thousand() -> None:
    common = passwords.common_passwords()
    assert 9_000 <= len(common) <= 10_000 and "123456" in common


# -- TOTP and recovery codes -------------------------------------------------------------------


def test_a_code_is_accepted_in_its_step_and_one_either_side_once() -> None:
    secret = totp.new_secret()
    generator = pyotp.TOTP(secret)
    step = generator.timecode(NOW)
    assert totp.matching_step(secret, generator.at(NOW), NOW, None) == step
    earlier = generator.at(NOW - timedelta(seconds=30))
    later = generator.at(NOW + timedelta(seconds=30))
    assert totp.matching_step(secret, earlier, NOW, None) == step - 1
    assert totp.matching_step(secret, later, NOW, None) == step + 1
    too_old = generator.at(NOW - timedelta(seconds=60))
    assert totp.matching_step(secret, too_old, NOW, None) is None
    # Used once: the same code, or one from an earlier step, is refused afterwards.
    assert totp.matching_step(secret, generator.at(NOW), NOW, step) is None
    assert totp.matching_step(secret, earlier, NOW, step) is None
    assert totp.matching_step(secret, later, NOW, step) == step + 1


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5x"])
def test_malformed_codes_are_refused(code: str) -> None:
    assert totp.matching_step(totp.new_secret(), code, NOW, None) is None


def test_recovery_codes_are_random_and_read_back_loosely() -> None:
    codes = totp.new_recovery_codes()
    assert len(set(codes)) == totp.RECOVERY_CODES
    code = codes[0]
    assert totp.recovery_hash(code) == totp.recovery_hash(code.upper().replace("-", " "))
    assert totp.recovery_hash(code) != totp.recovery_hash(codes[1])


def test_the_provisioning_uri_names_the_account_and_issuer() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "ana@clinic.example")
    assert uri.startswith("otpauth://totp/") and f"secret={secret}" in uri
    assert "ana%40clinic.example" in uri and "issuer=Santi" in uri


# -- sealed secrets ----------------------------------------------------------------------------


def test_a_sealed_secret_opens_only_with_the_same_key_and_purpose() -> None:
    box = SecretBox(GOOD_SECRET, "staff-totp")
    sealed = box.seal("JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert box.open(sealed) == "JBSWY3DPEHPK3PXP"
    with pytest.raises(SealedSecretError):
        SecretBox(GOOD_SECRET + "x", "staff-totp").open(sealed)
    with pytest.raises(SealedSecretError):
        SecretBox(GOOD_SECRET, "another-purpose").open(sealed)


# -- roles and stages --------------------------------------------------------------------------


def test_the_role_table() -> None:
    assert may(Role.VIEWER, Permission.VIEW_PATIENTS)
    assert not may(Role.VIEWER, Permission.ACT_ON_PATIENTS)
    assert may(Role.CLINICIAN, Permission.ACT_ON_PATIENTS)
    assert not may(Role.CLINICIAN, Permission.OPERATE)
    assert may(Role.OPERATOR, Permission.OPERATE)
    # Operators run the service without seeing patients.
    assert not may(Role.OPERATOR, Permission.VIEW_PATIENTS)
    # Admins do everything but the clinical sign-off of campaign content.
    assert {p for p in Permission if not may(Role.ADMIN, p)} == {Permission.APPROVE_CONTENT}
    assert {r for r in Role if may(r, Permission.APPROVE_CONTENT)} == {Role.CLINICIAN}
    assert {r for r in Role if may(r, Permission.EDIT_CONTENT)} == {Role.CLINICIAN, Role.ADMIN}
    assert {r for r in Role if may(r, Permission.RUN_CAMPAIGNS)} == {Role.CLINICIAN, Role.ADMIN}
    assert all(may(r, Permission.VIEW_CONTENT) for r in Role)
    assert not any(may(r, Permission.MANAGE_USERS) for r in Role if r is not Role.ADMIN)
    assert all(Permission.SIGNED_IN in GRANTS[r] for r in Role)
    assert not may("superuser", Permission.SIGNED_IN)
    assert parse_role(" Clinician ") is Role.CLINICIAN
    with pytest.raises(ValueError, match="viewer, clinician, operator, admin"):
        parse_role("doctor")


@pytest.mark.parametrize(
    ("checked", "has", "must_change", "required", "stage"),
    [
        (False, True, False, False, Stage.SECOND_FACTOR),
        (False, True, True, True, Stage.SECOND_FACTOR),
        (True, True, True, True, Stage.CHANGE_PASSWORD),
        (False, False, True, True, Stage.CHANGE_PASSWORD),
        (False, False, False, True, Stage.SETUP_2FA),
        (True, True, False, True, Stage.ACTIVE),
        (False, False, False, False, Stage.ACTIVE),
    ],
)
def test_the_sign_in_stages(
    checked: bool, has: bool, must_change: bool, required: bool, stage: Stage
) -> None:
    assert (
        next_stage(
            factor_checked=checked,
            has_factor=has,
            must_change_password=must_change,
            factor_required=required,
        )
        is stage
    )


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/staff/patients/3", "/staff/patients/3"),
        ("/staff/alerts?show=all", "/staff/alerts?show=all"),
        ("https://evil.example/staff/", "/staff/"),
        ("//evil.example/staff/", "/staff/"),
        ("/staff/\\\\evil.example", "/staff/"),
        ("/metrics", "/staff/"),
        ("", "/staff/"),
        (None, "/staff/"),
    ],
)
def test_after_sign_in_only_our_own_staff_pages(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


# -- the throttle ----------------------------------------------------------------------------


@dataclass
class FakeCounter:
    """The Counter protocol in memory, on the clock the test gives."""

    windows: dict[str, tuple[int, datetime]] = field(default_factory=dict)

    def seconds_locked(self, key: str, limit: int, now: datetime) -> float:
        count, ends = self.windows.get(key, (0, now))
        return (ends - now).total_seconds() if count >= limit and ends > now else 0.0

    def failed(self, key: str, window: timedelta, now: datetime) -> int:
        count, ends = self.windows.get(key, (0, now))
        if ends <= now:
            count, ends = 0, now + window
        self.windows[key] = (count + 1, ends)
        return count + 1

    def clear(self, key: str) -> None:
        self.windows.pop(key, None)


LIMITS = Limits(account_failures=5, address_failures=20, window=timedelta(minutes=15))


def test_an_account_locks_after_its_limit_and_unlocks_when_the_window_ends() -> None:
    throttle = Throttle(LIMITS, FakeCounter())
    for n in range(5):
        assert throttle.minutes_locked("Ana@clinic.example", "10.0.0.1", NOW) == 0, n
        throttle.failed("ana@clinic.example", "10.0.0.1", NOW + timedelta(seconds=n))
    # Locked whatever the case of the email, from any address: 15 minutes from the first.
    assert throttle.minutes_locked("ANA@clinic.example", "10.9.9.9", NOW) == 15
    assert (
        throttle.minutes_locked("ana@clinic.example", "10.9.9.9", NOW + timedelta(minutes=9)) == 6
    )
    assert (
        throttle.minutes_locked("ana@clinic.example", "10.9.9.9", NOW + timedelta(minutes=15)) == 0
    )
    # Another account from the same address is not locked.
    assert throttle.minutes_locked("bo@clinic.example", "10.0.0.1", NOW) == 0


def test_an_address_locks_after_its_limit_whatever_the_accounts() -> None:
    throttle = Throttle(LIMITS, FakeCounter())
    for n in range(20):
        throttle.failed(f"guess{n}@clinic.example", "203.0.113.9", NOW)
    assert throttle.minutes_locked("new@clinic.example", "203.0.113.9", NOW) == 15
    assert throttle.minutes_locked("new@clinic.example", "198.51.100.1", NOW) == 0


def test_success_clears_the_account_but_not_the_address() -> None:
    counter = FakeCounter()
    throttle = Throttle(LIMITS, counter)
    for _ in range(4):
        throttle.failed("ana@clinic.example", "10.0.0.1", NOW)
    throttle.succeeded("ana@clinic.example")
    assert account_key("ana@clinic.example") not in counter.windows
    assert counter.windows[address_key("10.0.0.1")][0] == 4
    # The key never holds the email itself.
    assert "ana" not in account_key("ana@clinic.example")


# -- production settings -----------------------------------------------------------------------


def test_estimated_entropy_tells_random_from_patterned() -> None:
    assert estimated_bits(GOOD_SECRET) >= 128
    assert estimated_bits("a" * 64) == 0
    assert estimated_bits("abcdefghijklmnopqrstuvwxyz0123456789") < 128
    assert estimated_bits("passwordpasswordpasswordpassword") < 128


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"secret_key": "x" * 40}, "guessable"),
        ({"secret_key": "abcdefghijklmnopqrstuvwxyz0123456789"}, "guessable"),
        ({"secret_key": "short"}, "32+"),
        (
            {
                "sms_provider": "twilio",
                "twilio_account_sid": "AC" + "1" * 32,
                "twilio_auth_token": TEST_AUTH_TOKEN,
                "twilio_from": "+447700900000",
            },
            "TWILIO_AUTH_TOKEN is the sandbox's",
        ),
        ({"require_2fa": "doctors"}, "CAMPAIGNS_REQUIRE_2FA"),
    ],
)
def test_production_refuses_weak_or_published_secrets(
    overrides: dict[str, object], message: str
) -> None:
    values: dict[str, object] = {"environment": "production", "secret_key": GOOD_SECRET}
    values.update(overrides)
    with pytest.raises(ValueError, match=message):
        Settings.model_validate(values)


def test_second_factor_roles_default_by_environment() -> None:
    production = Settings.model_validate({"environment": "production", "secret_key": GOOD_SECRET})
    assert production.second_factor_roles == frozenset(Role)
    assert Settings.model_validate({"environment": "development"}).second_factor_roles == set()
    chosen = Settings.model_validate({"require_2fa": "admin, operator"})
    assert chosen.second_factor_roles == {Role.ADMIN, Role.OPERATOR}


def test_allowed_hosts_are_ours_and_loopback() -> None:
    settings = Settings.model_validate(
        {
            "public_url": "https://sms.clinic.example",
            "staff_url": "https://staff.clinic.internal:8443",
            "allowed_hosts": "Proxy.Local, ",
        }
    )
    assert settings.hosts == {
        "sms.clinic.example",
        "staff.clinic.internal",
        "localhost",
        "127.0.0.1",
        "::1",
        "proxy.local",
    }
    assert settings.https


# -- where a form may come from ------------------------------------------------------------------


def _request(host: str) -> Any:
    from starlette.requests import Request

    return Request({"type": "http", "headers": [(b"host", host.encode())], "method": "POST"})


@pytest.mark.parametrize(
    ("origin", "host", "ours"),
    [
        ("https://sms.clinic.example", "sms.clinic.example", True),
        ("https://staff.clinic.internal", "10.0.0.5:8001", True),  # the staff URL
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),  # as the browser asked for it
        ("https://sms.clinic.example.evil.example", "sms.clinic.example", False),
        ("https://evil.example", "sms.clinic.example", False),
        ("null", "sms.clinic.example", False),
        ("https://sms.clinic.example/staff/patients/1", "sms.clinic.example", True),  # a Referer
    ],
)
def test_a_form_must_come_from_our_own_pages(origin: str, host: str, ours: bool) -> None:
    from campaigns.web.guard import own_origin

    settings = Settings.model_validate(
        {"public_url": "https://sms.clinic.example", "staff_url": "https://staff.clinic.internal"}
    )
    assert own_origin(origin, _request(host), settings) is ours
