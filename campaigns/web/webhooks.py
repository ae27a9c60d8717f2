"""Provider webhooks: patients' texts, Twilio status callbacks and SendGrid events. Each checks
its signature against the raw request, refuses anything malformed or oversized with a 4xx that
changes nothing, and hands the parsed items to the application (campaigns.answering for texts,
campaigns.receipts for delivery news)."""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from sendgrid.helpers.eventwebhook import EventWebhook
from sqlalchemy.exc import DBAPIError
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from campaigns import receipts
from campaigns.providers.twilio import ADVANCED_OPT_OUT
from campaigns.rules.replies import Inbound
from campaigns.web.deps import ServicesDep, get_services

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", include_in_schema=False)
TWILIO_MAX_BYTES = 64 * 1024
SENDGRID_MAX_BYTES = 5 * 1024 * 1024
REPLAY_WINDOW_SECONDS = 600
T = TypeVar("T")


class FormParams(dict[str, list[str]]):
    """Every field as Twilio sent it, repeats included: the signature covers them all."""

    def getlist(self, name: str) -> list[str]:
        return self.get(name, [])


def form_params(body: bytes) -> FormParams:
    return FormParams(
        urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    )


def twilio_signed(url: str, params: FormParams, signature: str, token: str) -> bool:
    """X-Twilio-Signature check by the SDK's own validator (HMAC-SHA1 of URL + fields)."""
    return bool(signature) and bool(RequestValidator(token).validate(url, params, signature))


async def _body(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = await request.body()
    return None if len(body) > limit else body


def _context(services: ServicesDep) -> receipts.Context:
    return receipts.Context(
        services.db, services.planner, services.window, services.settings.max_attempts
    )


async def _twilio_form(
    request: Request, services: ServicesDep, signature: str, what: str
) -> dict[str, str] | Response:
    """The signed form fields Twilio posted, or the 4xx response that refuses them."""
    settings = services.settings
    body = await _body(request, TWILIO_MAX_BYTES)
    if body is None:
        return Response(status_code=413)
    token = settings.twilio_auth_token
    params = form_params(body)
    # Validate against the URL Twilio called: our public URL, this path, the exact query.
    url = settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if token is None or not twilio_signed(url, params, signature, token.get_secret_value()):
        log.warning(
            "twilio %s refused: bad or missing signature",
            what,
            extra={"event": "web.webhooks.twilio_refused_bad_or"},
        )
        return Response(status_code=403)
    return {name: values[0] for name, values in params.items() if values}


def inbound_from_twilio(form: Mapping[str, str]) -> Inbound:
    """The fields we use from Twilio's incoming-message webhook; ValueError names a bad one."""
    sid = form.get("MessageSid") or form.get("SmsMessageSid") or ""
    sender = form.get("From", "")
    if not sid or len(sid) > 64:
        raise ValueError("MessageSid is missing or too long")
    if not sender or len(sender) > 32:
        raise ValueError("From is missing or too long")
    kind = (form.get("OptOutType") or "").strip().upper() or None
    if kind is not None and kind not in ADVANCED_OPT_OUT:
        kind = None
    return Inbound(sid, sender.strip(), form.get("Body", ""), kind)


def twiml(texts: tuple[str, ...]) -> Response:
    """The answer as TwiML: each text one <Message>; none is an empty <Response/>."""
    response = MessagingResponse()
    for text in texts:
        response.message(text)
    return Response(str(response), media_type="application/xml")


async def twilio_sms(request: Request) -> Response:
    """A patient's text: stored, classified, acted on, answered in the response (TwiML).

    A plain Starlette endpoint (no FastAPI dependency solving or parameter validation): this
    is the hot path, and its answer races Twilio's 15-second webhook timeout."""
    services = get_services(request)
    signature = request.headers.get("X-Twilio-Signature", "")
    form = await _twilio_form(request, services, signature, "incoming message")
    if isinstance(form, Response):
        return form
    try:
        message = inbound_from_twilio(form)
    except ValueError as exc:
        return Response(str(exc), status_code=400, media_type="text/plain")
    answerer = services.answerer
    now = services.clock.now()
    try:
        # In a worker thread: the transaction takes the patient's lock (held by a send only
        # for its short go-ahead), so the event loop stays free for other requests.
        answer = await run_in_threadpool(_once_more_if_disconnected, answerer.handle, message, now)
    except Exception:
        # No silent failure: the patient still gets the safety answer (or the generic one with
        # 111/999), and the text goes to staff as an alert if the database takes it. Twilio does
        # not retry a webhook that answered, so this is the only chance.
        log.exception(
            "an incoming message could not be handled; answered with the fallback",
            extra={"event": "web.webhooks.incoming_message_could_not"},
        )
        return twiml(await run_in_threadpool(answerer.fallback, message, now))
    return twiml(answer.replies)


@router.post("/twilio/status")
async def twilio_status(
    request: Request,
    services: ServicesDep,
    signature: Annotated[str, Header(alias="X-Twilio-Signature")] = "",
) -> Response:
    form = await _twilio_form(request, services, signature, "status callback")
    if isinstance(form, Response):
        return form
    message = request.query_params.get("m", "")
    try:
        # In a worker thread: it takes the patient's lock; the event loop stays free.
        result = await run_in_threadpool(
            _once_more_if_disconnected,
            receipts.twilio_status,
            _context(services),
            form,
            int(message) if message.isdigit() else None,
            services.clock.now(),
        )
    except ValueError:
        return Response(status_code=400)
    log.info(
        "twilio status %s for message %s: %s",
        form.get("MessageStatus"),
        message or "?",
        result,
        extra={"event": "web.webhooks.twilio_status"},
    )
    return Response(status_code=204)


@router.post("/sendgrid/events")
async def sendgrid_events(
    request: Request,
    services: ServicesDep,
    signature: Annotated[str, Header(alias="X-Twilio-Email-Event-Webhook-Signature")] = "",
    timestamp: Annotated[str, Header(alias="X-Twilio-Email-Event-Webhook-Timestamp")] = "",
) -> Response:
    body = await _body(request, SENDGRID_MAX_BYTES)
    if body is None:
        return Response(status_code=413)
    key = services.settings.sendgrid_event_public_key
    if (
        not key
        or not signature
        or not timestamp
        or not sendgrid_signed(key, body, signature, timestamp)
    ):
        log.warning(
            "sendgrid events refused: bad or missing signature",
            extra={"event": "web.webhooks.sendgrid_events_refused_bad"},
        )
        return Response(status_code=403)
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > REPLAY_WINDOW_SECONDS:
        log.warning(
            "sendgrid events refused: timestamp outside the replay window",
            extra={"event": "web.webhooks.sendgrid_events_refused_timestamp"},
        )
        return Response(status_code=403)
    try:
        events = json.loads(body)
    except ValueError:
        return Response(status_code=400)
    if not isinstance(events, list):
        return Response(status_code=400)
    counts = await run_in_threadpool(
        _once_more_if_disconnected,
        receipts.sendgrid_events,
        _context(services),
        events,
        services.clock.now(),
    )
    log.info(
        "sendgrid events: %s", counts, extra={"event": "web.webhooks.sendgrid_events_recorded"}
    )
    return Response(status_code=204)


def _once_more_if_disconnected(work: Callable[..., T], *args: Any) -> T:
    """Run the work; if the database connection was lost under it (a restart, a killed
    backend), once more on a fresh one. Nothing committed the first time (each piece of work
    is one transaction, and a replay is recognised), and a provider does not call twice."""
    try:
        return work(*args)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning(
            "database connection lost during a webhook; trying once more",
            extra={"event": "web.webhooks.database_connection_lost_during"},
        )
        return work(*args)


def sendgrid_signed(public_key: str, body: bytes, signature: str, timestamp: str) -> bool:
    try:
        return bool(
            EventWebhook(public_key).verify_signature(body.decode("utf-8"), signature, timestamp)
        )
    except (ValueError, UnicodeDecodeError):  # malformed key, signature or body
        return False
