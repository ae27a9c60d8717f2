"""The sandboxes' published test credentials. Anyone can read them here, so the service
refuses them in production (campaigns.settings)."""

from __future__ import annotations

TEST_ACCOUNT_SID = "AC" + "0" * 31 + "1"
TEST_AUTH_TOKEN = "test_auth_token_0123456789abcdef"  # noqa: S105 - the sandbox's own
TEST_API_KEY = "SG.sandbox.sandboxsecret"
