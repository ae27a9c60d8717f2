"""The one place that wires settings, storage, providers, clock and the send path together."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

from campaigns import campaign_states
from campaigns.answering import Answerer
from campaigns.content_versions import LiveCatalog, VersionCache, live_catalog
from campaigns.delivery import DeliveryPolicy
from campaigns.enrollments import Enrollments
from campaigns.passkeys import RelyingParty
from campaigns.planner import Planner
from campaigns.providers.fake import FakeEmailSender, FakeSmsSender
from campaigns.providers.local import LocalEmailSender, LocalSmsSender
from campaigns.providers.sendgrid import SendGridEmailSender
from campaigns.providers.smtp import SmtpEmailSender
from campaigns.providers.twilio import TwilioSmsSender
from campaigns.ratelimit import RateLimiter, limiter
from campaigns.rules.catalog import Catalog
from campaigns.rules.clock import Clock, SystemClock
from campaigns.rules.content import Clinic, ContentRenderer, check_reply_fit
from campaigns.rules.content_checks import check_campaigns
from campaigns.rules.intake import IntakeRules
from campaigns.rules.keywords import Reader, load_reader
from campaigns.rules.links import LinkSigner
from campaigns.rules.ports import EmailSender, SmsSender
from campaigns.rules.replies import BIRTH_DATE, NOTED, UNKNOWN_SENDER, UNRECOGNISED
from campaigns.rules.secretbox import SecretBox
from campaigns.rules.vocabulary import Channel
from campaigns.rules.window import SendWindow
from campaigns.sending import Deliverer
from campaigns.settings import Settings
from campaigns.sign_in_throttle import Limits, Throttle, throttle
from campaigns.staff_accounts import TOTP_PURPOSE
from campaigns.storage.db import Database, Timeouts

#: Twilio waits 15 s for a webhook's answer: a lock or statement that takes longer than these
#: fails, and the webhook answers from its fallback instead of timing out. Webhooks retry on a
#: dropped connection, so their connections are not pinged before each use.
WEB_TIMEOUTS = Timeouts(lock_seconds=5, statement_seconds=10, pre_ping=False)
#: Staff pages take the same bounds, and check each pooled connection before use: a staff
#: action after a database failover must not answer 500 (they have no fallback of their own,
#: and a round trip more costs a person nothing).
STAFF_TIMEOUTS = Timeouts(lock_seconds=5, statement_seconds=10, pre_ping=True)


@dataclass
class Services:
    settings: Settings
    db: Database
    catalog: Catalog
    window: SendWindow
    renderer: ContentRenderer
    links: LinkSigner
    sms: SmsSender
    email: EmailSender
    clock: Clock
    policy: DeliveryPolicy
    reader: Reader
    _deliverer: Deliverer | None = field(default=None, init=False, repr=False)

    @cached_property
    def planner(self) -> Planner:
        return Planner(self.catalog, self.window, timedelta(days=self.settings.plan_horizon_days))

    @cached_property
    def enrollments(self) -> Enrollments:
        return Enrollments(self.db, self.planner, self.clock)

    @cached_property
    def answerer(self) -> Answerer:
        return Answerer(self.db, self.planner, self.renderer, self.links, self.reader)

    @cached_property
    def sign_in_throttle(self) -> Throttle:
        settings = self.settings
        limits = Limits(
            account_failures=settings.sign_in_account_failures,
            address_failures=settings.sign_in_address_failures,
            window=timedelta(minutes=settings.sign_in_window_minutes),
        )
        return throttle(self.db, limits, settings.rate_limit_redis)

    @cached_property
    def totp_box(self) -> SecretBox:
        return SecretBox(self.settings.secret_key.get_secret_value(), TOTP_PURPOSE)

    @cached_property
    def relying_party(self) -> RelyingParty:
        return RelyingParty.of(self.settings.staff_base_url, f"{self.settings.clinic_name} staff")

    @property
    def intake(self) -> IntakeRules:
        return IntakeRules(
            self.catalog,
            self.settings.phone_region,
            self.settings.default_timezone,
            campaign_states.states(self.db) if isinstance(self.catalog, LiveCatalog) else {},
        )

    @property
    def deliverer(self) -> Deliverer:
        if self._deliverer is None:
            self._deliverer = Deliverer(
                self.db,
                self.renderer,
                self.window,
                self.links,
                self.sms,
                self.email,
                self.clock,
                self.policy,
                planner=self.planner,
                limiters=rate_limiters(self.settings, self.sms, self.email),
            )
        return self._deliverer

    def close(self) -> None:
        if self._deliverer is not None:
            self._deliverer.close()
        self.db.dispose()


def clinic_from(settings: Settings) -> Clinic:
    return Clinic(
        name=settings.clinic_name,
        short_name=settings.clinic_short_name,
        phone=settings.clinic_phone,
        email=settings.clinic_email,
        address=settings.clinic_address,
        website=settings.clinic_website,
        help_url=settings.clinic_help_url,
        send_hours=settings.window().hours(),
    )


def policy_from(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        dispatch_batch_size=settings.dispatch_batch_size,
        send_batch_size=settings.send_batch_size,
        send_concurrency=settings.send_concurrency,
        max_attempts=settings.max_attempts,
        retry_base_seconds=settings.retry_base_seconds,
        retry_max_seconds=settings.retry_max_seconds,
        claim_timeout_seconds=settings.claim_timeout_seconds,
        send_lease_seconds=settings.send_lease_seconds,
        reconcile_after_seconds=settings.reconcile_after_seconds,
        review_after_seconds=settings.review_after_seconds,
        rates={Channel.SMS: settings.sms_rate, Channel.EMAIL: settings.email_rate},
    )


def sms_sender(settings: Settings) -> SmsSender:
    if settings.sms_provider == "twilio":
        assert settings.twilio_account_sid
        assert settings.twilio_auth_token
        return TwilioSmsSender(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            status_callback=settings.public_url.rstrip("/") + "/webhooks/twilio/status",
            from_=settings.twilio_from,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            api_base_url=settings.twilio_api_base_url,
            timeout=settings.provider_timeout_seconds,
            max_connections=settings.send_concurrency,
        )
    return FakeSmsSender() if settings.sms_provider == "fake" else LocalSmsSender()


def email_sender(settings: Settings) -> EmailSender:
    if settings.email_provider == "sendgrid":
        assert settings.sendgrid_api_key
        assert settings.sendgrid_from
        return SendGridEmailSender(
            settings.sendgrid_api_key.get_secret_value(),
            from_email=settings.sendgrid_from,
            from_name=settings.clinic_name,
            host=settings.sendgrid_api_host,
            timeout=settings.provider_timeout_seconds,
            activity_lag=settings.sendgrid_activity_lag_seconds,
        )
    if settings.email_provider == "smtp":
        assert settings.smtp_from
        return SmtpEmailSender(
            settings.smtp_host,
            settings.smtp_port,
            from_email=settings.smtp_from,
            from_name=settings.clinic_name,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
            timeout=settings.provider_timeout_seconds,
        )
    return FakeEmailSender() if settings.email_provider == "fake" else LocalEmailSender()


def rate_limiters(
    settings: Settings, sms: SmsSender, email: EmailSender
) -> dict[Channel, RateLimiter]:
    """One limit per provider account, shared by every worker through Redis."""
    account = settings.twilio_account_sid or "default"
    threads = settings.send_concurrency
    return {
        Channel.SMS: limiter(
            settings.sms_rate,
            f"ratelimit:{sms.name}:{account}",
            settings.rate_limit_redis,
            concurrency=threads,
        ),
        Channel.EMAIL: limiter(
            settings.email_rate,
            f"ratelimit:{email.name}",
            settings.rate_limit_redis,
            concurrency=threads,
        ),
    }


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    sms: SmsSender | None = None,
    email: EmailSender | None = None,
    web: bool = False,
    staff: bool = False,
) -> Services:
    """Everything a process needs; raises (and the process stops) if a definition is wrong.

    `web`: a process that answers HTTP: its database waits are bounded (WEB_TIMEOUTS), so a
    webhook answers (or fails over to its fallback) before the provider gives up on it.
    `staff`: it also serves staff pages (STAFF_TIMEOUTS)."""
    timeouts = (STAFF_TIMEOUTS if staff else WEB_TIMEOUTS) if web else None
    clock = clock or SystemClock()
    # Provider calls run in threads without a connection; the database work is per batch.
    db = Database.from_url(settings.database_url, pool_size=5, timeouts=timeouts)
    clinic = clinic_from(settings)
    # Every step's words, as an editor checks them: the repository's campaigns whatever the
    # database holds (they are the seed), then the live versions.
    seed_catalog = Catalog.load(settings.templates_dir)
    check_campaigns(seed_catalog.values(), ContentRenderer(settings.templates_dir, clinic))
    catalog = live_catalog(db, settings.templates_dir, clock)
    versions = VersionCache(db) if isinstance(catalog, LiveCatalog) else None
    renderer = ContentRenderer(settings.templates_dir, clinic, versions)
    if versions is not None:
        check_campaigns(catalog.values(), renderer, catalog)
    reader = load_reader(settings.templates_dir / "_keywords")
    links = LinkSigner(settings.secret_key.get_secret_value().encode(), settings.public_url)
    check_reply_fit(renderer, reply_keys(reader), links.longest_booking_url())
    return Services(
        settings=settings,
        db=db,
        catalog=catalog,
        window=settings.window(),
        renderer=renderer,
        links=links,
        sms=sms or sms_sender(settings),
        email=email or email_sender(settings),
        clock=clock,
        policy=policy_from(settings),
        reader=reader,
    )


def reply_keys(reader: Reader) -> set[str]:
    """Every reply template a word list or the reply rules can ask for."""
    return reader.reply_keys | {UNKNOWN_SENDER, UNRECOGNISED, NOTED, BIRTH_DATE}
