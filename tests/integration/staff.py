"""Signing staff in for tests: a real account, the real sign-in form, and a client that puts
the session's CSRF token on every form it posts."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from httpx2 import Response

from campaigns import staff_accounts
from campaigns.bootstrap import Services

PASSWORD = "a long test password 4 staff"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def login_token(client: TestClient) -> str:
    page = client.get("/staff/login")
    found = _TOKEN.search(page.text)
    assert found, "the sign-in page has no CSRF token"
    return found.group(1)


def add_member(services: Services, role: str, email: str | None = None) -> str:
    address = email or f"{role}@clinic.example"
    staff_accounts.add(
        services.db, address, role, services.clock.now(), actor="test", password=PASSWORD
    )
    return address


class StaffClient:
    """A TestClient signed in as one member; `post` adds the CSRF token unless told not to."""

    def __init__(self, client: TestClient, email: str) -> None:
        self.client, self.email = client, email
        answer = client.post(
            "/staff/login",
            data={"email": email, "password": PASSWORD, "csrf_token": login_token(client)},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        home = client.get("/staff/")
        found = _META.search(home.text)
        assert found, f"not signed in: {home.status_code}"
        self.csrf = found.group(1)

    def get(self, url: str, **kwargs: Any) -> Response:
        return self.client.get(url, **kwargs)

    def post(self, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Response:
        fields = {"csrf_token": self.csrf, **(data or {})}
        return self.client.post(url, data=fields, **kwargs)


def sign_in(client: TestClient, services: Services, role: str = "admin") -> StaffClient:
    return StaffClient(client, add_member(services, role))
