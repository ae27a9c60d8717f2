"""The requests our senders make, and the sandboxes' answers, checked against the official
OpenAPI specs by Prism in validating-proxy mode (`prism proxy --errors`)."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from campaigns.rules.ports import (
    Attempt,
    LookupVerdict,
    OutgoingEmail,
    OutgoingSms,
    PermanentError,
)
from campaigns.sandbox.credentials import TEST_ACCOUNT_SID, TEST_API_KEY, TEST_AUTH_TOKEN
from campaigns.sandbox.sendgrid_server import SendGridSandbox
from campaigns.sandbox.twilio_server import TwilioSandbox
from tests.integration.processes import free_port
from tests.providers.conftest import sendgrid_sender, twilio_sender

ROOT = Path(__file__).resolve().parents[2]
SPECS = Path(__file__).resolve().parent / "specs"
PRISM = ROOT / "node_modules" / ".bin" / "prism"
TWILIO_SPEC = "twilio_api_v2010_messages_subset.json"
#: The list's paging fields, which the spec types `format: uri` although Twilio answers them
#: relative ("/2010-04-01/..."), as the spec's own examples show and the SDK requires (it
#: prefixes https://api.twilio.com). Prism rightly refuses those examples too.
RELATIVE_URI_FIELDS = ("uri", "first_page_uri", "next_page_uri", "previous_page_uri")

pytestmark = pytest.mark.slow


def prism_proxy(spec: str, upstream: str) -> Iterator[str]:
    if not PRISM.exists():
        pytest.fail(f"Prism is not installed at {PRISM}: run `make test` (it runs npm ci)")
    port = free_port()
    process = subprocess.Popen(
        [
            str(PRISM),
            "proxy",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--errors",
            str(SPECS / spec),
            upstream,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read() if process.stdout else ""
                pytest.fail(f"Prism did not start: {output[-2000:]}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
    if process.stdout:
        process.stdout.close()


@pytest.fixture
def twilio_through_prism() -> Iterator[tuple[str, TwilioSandbox]]:
    sandbox = TwilioSandbox(0, callbacks=False)
    sandbox.start()
    yield from (
        (url, sandbox) for url in prism_proxy("twilio_api_v2010_messages_subset.json", sandbox.url)
    )
    sandbox.stop()


@pytest.fixture
def twilio_list_through_prism(tmp_path: Path) -> Iterator[tuple[str, TwilioSandbox]]:
    """The subset spec with only `format: uri` taken off the list's relative paging fields
    (see RELATIVE_URI_FIELDS; everything else is validated as published), in front of a
    sandbox whose messages are sent at once, so every one has a date_sent."""
    spec = json.loads((SPECS / TWILIO_SPEC).read_text())
    listing = spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"]["get"]
    schema = listing["responses"]["200"]["content"]["application/json"]["schema"]
    for field in RELATIVE_URI_FIELDS:
        assert schema["properties"][field].pop("format") == "uri"
    patched = tmp_path / "twilio_relative_paging_uris.json"
    patched.write_text(json.dumps(spec))
    sandbox = TwilioSandbox(0, callbacks=False, callback_delay=0.0)
    sandbox.start()
    yield from ((url, sandbox) for url in prism_proxy(str(patched), sandbox.url))
    sandbox.stop()


@pytest.fixture
def sendgrid_through_prism() -> Iterator[tuple[str, SendGridSandbox]]:
    sandbox = SendGridSandbox(0)
    sandbox.start()
    yield from ((url, sandbox) for url in prism_proxy("tsg_mail_v3.json", sandbox.url))
    sandbox.stop()


def test_twilio_requests_and_responses_match_the_spec(
    twilio_through_prism: tuple[str, TwilioSandbox],
) -> None:
    url, sandbox = twilio_through_prism
    for sender in (
        twilio_sender(url),
        twilio_sender(url, from_="", messaging_service_sid="MG" + "c" * 32),
    ):
        receipt = sender.send_sms(
            OutgoingSms(
                5,
                "+447400000001",
                "Santi: a test. Reply STOP to end",
                datetime.now(UTC) + timedelta(hours=1),
            )
        )
        assert receipt.provider_id.startswith("SM")
    assert len(sandbox.recorder.snapshot()) == 2


def test_prism_really_rejects_a_request_the_spec_forbids(
    twilio_through_prism: tuple[str, TwilioSandbox],
) -> None:
    url, sandbox = twilio_through_prism
    request = urllib.request.Request(
        f"{url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json",
        data=b"To=%2B447400000001&From=%2B15005550006&Body=x&ValidityPeriod=abc",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "Basic " + base64.b64encode(f"{TEST_ACCOUNT_SID}:x".encode()).decode(),
        },
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 422
    assert sandbox.recorder.snapshot() == []


def test_sendgrid_requests_and_responses_match_the_spec(
    sendgrid_through_prism: tuple[str, SendGridSandbox],
) -> None:
    url, sandbox = sendgrid_through_prism
    receipt = sendgrid_sender(url).send_email(
        OutgoingEmail(
            6,
            "pat@example.com",
            "Your Santi leg-care tip",
            "<p>Hi</p>",
            "Hi",
            "leg-cramps:welcome",
            "https://clinic.example/u/TOKEN",
        )
    )
    assert receipt.provider_id == sandbox.recorder.snapshot()[0]["x_message_id"]


def test_prism_really_rejects_a_mail_the_spec_forbids(
    sendgrid_through_prism: tuple[str, SendGridSandbox],
) -> None:
    url, sandbox = sendgrid_through_prism
    request = urllib.request.Request(
        f"{url}/v3/mail/send",
        data=json.dumps({"subject": "no from, no recipients"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TEST_API_KEY}"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    body = refused.value.read().decode()
    refused.value.close()
    # 422 with Prism's validation report: the sandbox alone would have answered 400.
    assert refused.value.code == 422, body
    assert "personalizations" in body or "from" in body, body
    assert sandbox.recorder.snapshot() == []


def test_a_refusal_relayed_by_prism_is_still_classified(
    sendgrid_through_prism: tuple[str, SendGridSandbox],
) -> None:
    url, _ = sendgrid_through_prism
    with pytest.raises(PermanentError):
        sendgrid_sender(url).send_email(
            OutgoingEmail(
                6, "invalid-address@example.com", "S", "<p>x</p>", "x", "c", "https://x/u/t"
            )
        )


def sms(message_id: int, body: str) -> OutgoingSms:
    return OutgoingSms(message_id, "+447400000001", body, datetime.now(UTC) + timedelta(hours=1))


def test_the_twilio_lookup_and_its_pages_match_the_spec(
    twilio_list_through_prism: tuple[str, TwilioSandbox],
) -> None:
    """find_sms through the validating proxy: the list request (To, DateSent>, PageSize), the
    first page, and the next page the SDK follows; any violation would answer 422 or 500."""
    url, _ = twilio_list_through_prism
    sender = twilio_sender(url)
    started = datetime.now(UTC)
    first = sms(1, "Santi: the first. Reply STOP to end")
    receipt = sender.send_sms(first)
    for i in range(55):  # newer ones: the first is on the second page of 50
        sender.send_sms(sms(100 + i, f"Santi: tip {i}. Reply STOP to end"))
    found = sender.find_sms(Attempt(1, first.to, first.body, None, started))
    assert (found.verdict, found.provider_id) == (LookupVerdict.FOUND, receipt.provider_id)
    assert "56 messages to the number" in found.evidence
    # The unfiltered list (read when the dated one has no match) and one message's fetch.
    missing = sender.find_sms(Attempt(2, first.to, "never sent", None, started))
    assert missing.verdict is LookupVerdict.NOT_FOUND
    fetched = sender.client().messages(receipt.provider_id).fetch()
    assert (fetched.sid, fetched.status) == (receipt.provider_id, "delivered")


def prism_answer(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        headers={
            "Authorization": "Basic "
            + base64.b64encode(f"{TEST_ACCOUNT_SID}:{TEST_AUTH_TOKEN}".encode()).decode()
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, json.load(refused)


def test_the_published_spec_refuses_only_the_relative_paging_uris(
    twilio_through_prism: tuple[str, TwilioSandbox],
) -> None:
    """Against the spec as published, the list answer's only violations are the relative
    paging fields (`format: uri`): the quirk the fixture above takes off, nothing else."""
    url, _ = twilio_through_prism
    for i in range(3):
        twilio_sender(url).send_sms(sms(i, f"Santi: tip {i}. Reply STOP to end"))
    query = urllib.parse.urlencode({"To": "+447400000001", "PageSize": 2})
    status, problem = prism_answer(
        f"{url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json?{query}"
    )
    assert status == 500, problem
    violations = {(tuple(v["location"]), v["code"]) for v in problem["validation"]}
    assert violations <= {(("response", "body", f), "format") for f in RELATIVE_URI_FIELDS}
    assert (("response", "body", "next_page_uri"), "format") in violations
