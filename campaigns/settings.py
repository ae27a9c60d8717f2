"""One validated settings object, read from CAMPAIGNS_* environment variables.

Every command and process builds it the same way (get_settings), so a database URL given to
`campaigns migrate` is the one `campaigns enroll` and the workers use. A setting that cannot work
(an unknown timezone or holiday region, a malformed send window, a development secret in
production) stops start-up with a message naming it.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from campaigns.rules.pregnancy import TrimesterConvention
from campaigns.rules.roles import Role, parse_role
from campaigns.rules.window import SendWindow, WindowError, zone
from campaigns.sandbox.credentials import TEST_ACCOUNT_SID, TEST_API_KEY, TEST_AUTH_TOKEN

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEVELOPMENT_SECRET = "development-only-secret-do-not-use-in-production"  # noqa: S105 - refused in production
EMBEDDED_BROKER = "embedded"
#: A production secret must carry at least this much (estimated) entropy.
MIN_SECRET_BITS = 128
#: Hosts every request may name, besides the public URL's.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class ProviderAccounts(BaseModel):
    """The providers' accounts. They keep their providers' own variable names (no CAMPAIGNS_
    prefix)."""

    twilio_account_sid: str | None = Field(default=None, validation_alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr | None = Field(default=None, validation_alias="TWILIO_AUTH_TOKEN")
    twilio_from: str | None = Field(default=None, validation_alias="TWILIO_FROM")
    twilio_messaging_service_sid: str | None = Field(
        default=None, validation_alias="TWILIO_MESSAGING_SERVICE_SID"
    )
    #: Unset in production; points the SDK at a local server in tests and the sandbox.
    twilio_api_base_url: str | None = Field(default=None, validation_alias="TWILIO_API_BASE_URL")
    sendgrid_api_key: SecretStr | None = Field(default=None, validation_alias="SENDGRID_API_KEY")
    sendgrid_api_host: str = Field(
        default="https://api.sendgrid.com", validation_alias="SENDGRID_API_HOST"
    )
    sendgrid_event_public_key: str | None = Field(
        default=None, validation_alias="SENDGRID_EVENT_PUBLIC_KEY"
    )
    sendgrid_from: str | None = Field(default=None, validation_alias="SENDGRID_FROM")
    #: How long an email SendGrid accepted may take to appear in its Email Activity API: until
    #: then, not finding it there proves nothing (SendGrid documents no figure).
    sendgrid_activity_lag_seconds: float = Field(default=600.0, ge=0)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_from: str | None = None


class ClinicDetails(BaseModel):
    """Who the messages come from."""

    clinic_name: str = "Santi Clinic"
    clinic_short_name: str = Field(default="Santi", max_length=11)
    clinic_phone: str = "020 7946 0000"
    clinic_email: str = "hello@santi.example"
    clinic_address: str = "1 Example Street, London N1 0AA"
    clinic_website: str = "https://santi.example"
    clinic_help_url: str = "https://santi.example/help"


class SendingSettings(BaseModel):
    """How the outbox is planned, claimed, sent, retried and taken back."""

    #: Sends due within this many days are written to the outbox; the rest as they approach.
    plan_horizon_days: int = Field(default=14, ge=2, le=400)
    dispatch_interval_seconds: float = Field(default=2.0, gt=0)
    dispatch_batch_size: int = Field(default=5000, ge=1)
    send_batch_size: int = Field(default=200, ge=1)
    #: Provider calls in flight per worker process: a whole batch at once by default.
    send_concurrency: int = Field(default=200, ge=1, le=512)
    #: A claimed batch no worker has started after this goes back to pending (its task was
    #: lost with the broker, or the worker died before taking it).
    claim_timeout_seconds: int = Field(default=60, ge=2)
    #: A sending batch whose worker has not renewed its lease for this long is taken back:
    #: rows whose call never started go back to pending, the others are reconciled.
    send_lease_seconds: int = Field(default=30, ge=2)
    #: An unknown send is looked up at its provider once it is this old (the provider's
    #: records and callbacks have caught up by then).
    reconcile_after_seconds: int = Field(default=120, ge=1)
    #: An unknown send the provider cannot be asked about (or will not answer) goes to staff
    #: after this, unless a delivery callback settled it first.
    review_after_seconds: int = Field(default=3600, ge=1)
    #: How often beat runs the reaper and the reconciler.
    upkeep_interval_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: int = Field(default=60, ge=1)
    retry_max_seconds: int = Field(default=3600, ge=1)


class StaffAccess(BaseModel):
    """Staff sign-in (docs/operations.md, "Security")."""

    #: A staff session ends after this long without a request, and after the absolute limit
    #: whatever the activity.
    session_idle_minutes: int = Field(default=30, ge=1)
    session_absolute_hours: float = Field(default=12, gt=0)
    #: Roles that must use a second factor: "all", "none", or a list such as
    #: "admin,clinician". Unset: every role in production, none elsewhere.
    require_2fa: str | None = None
    #: Failed sign-ins allowed per account, and per client address, in a window.
    sign_in_account_failures: int = Field(default=5, ge=1)
    sign_in_address_failures: int = Field(default=20, ge=1)
    sign_in_window_minutes: int = Field(default=15, ge=1)
    #: A broadcast to more patients than this goes only once a second staff member (not
    #: the one who wrote it or asked) approves it (campaigns.broadcasts).
    broadcast_approval_over: int = Field(default=100, ge=0)
    #: Host names requests may use besides the public URL's host and loopback (comma list).
    allowed_hosts: str = ""
    #: Lets Prometheus read /metrics with `Authorization: Bearer <token>` (no sign-in).
    metrics_token: SecretStr | None = None
    #: Request bodies larger than this are refused while they arrive (413); SendGrid's event
    #: batches have their own, larger limit.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)


class Operations(BaseModel):
    """How operators see the processes (docs/operations.md, "Watching it")."""

    #: Worker, beat and public web containers serve their counters for Prometheus on this
    #: port (the staff listener serves them at /metrics); unset: not served.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    #: Where worker and beat touch their liveness files (`campaigns health worker|beat`).
    health_dir: Path = Path(tempfile.gettempdir())
    #: How often beat sends a heartbeat task through each worker queue.
    heartbeat_seconds: float = Field(default=30.0, gt=0)
    #: /readyz fails when no beat has ticked for this long.
    beat_silent_seconds: float = Field(default=60.0, gt=0)
    #: "json" (one object per line, for log collectors) or "text" (for a terminal); unset:
    #: JSON in production, text elsewhere.
    log_format: Literal["json", "text"] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: Celery remote control and task events, which Flower needs to show the workers. Safe
    #: only where nobody but the operators reaches the broker (docs/deployment.md, "Flower").
    celery_monitoring: bool = False
    #: Outbox rows whose story is over (sent, delivered, undelivered, bounced, cancelled,
    #: skipped, expired) last changed longer ago than this are deleted by the daily
    #: `retention` job, with their provider events: the clinic's records policy (2 years).
    retention_days: int = 730

    @field_validator("retention_days")
    @classmethod
    def _some_retention(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                f"CAMPAIGNS_RETENTION_DAYS must be at least 1 (days sent messages are kept), "
                f"not {value}"
            )
        return value

    @property
    def json_logs(self) -> bool:
        if self.log_format is None:
            return getattr(self, "environment", "development") == "production"
        return self.log_format == "json"


class Settings(
    ProviderAccounts, ClinicDetails, SendingSettings, StaffAccess, Operations, BaseSettings
):
    # hide_input_in_errors: a bad setting must never print the secrets next to it.
    # env_ignore_empty: a variable set to "" is unset, so docker-compose.yml can pass every
    # setting through from .env (`${NAME:-}`) and an empty one keeps the default here (an empty
    # CAMPAIGNS_METRICS_TOKEN must not be a token that `Bearer ` matches).
    model_config = SettingsConfigDict(
        env_prefix="CAMPAIGNS_",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite:///campaigns.db"
    #: "embedded" runs worker and beat inside `campaigns serve`; otherwise a Celery broker URL.
    broker_url: str = EMBEDDED_BROKER
    public_url: str = "http://127.0.0.1:8000"
    #: Where staff reach the staff UI, when it is not at the public URL (its own listener, an
    #: internal name): sign-in cookies, security keys and form origins are checked against it.
    staff_url: str | None = None
    secret_key: SecretStr = SecretStr(DEVELOPMENT_SECRET)
    booking_url: str = "https://santi.example/book"
    #: Where RED and AMBER alerts are emailed (through the email provider); unset: inbox only.
    alert_email: str | None = None
    #: "local" keeps messages in the database and shows them in the staff UI (nothing leaves
    #: the machine); "outbox", its old name, is still read as "local".
    sms_provider: Literal["local", "fake", "twilio"] = "local"
    email_provider: Literal["local", "fake", "sendgrid", "smtp"] = "local"
    #: Messages per second for each provider account, shared by every worker (0: no limit).
    sms_rate: float = Field(default=0, ge=0)
    email_rate: float = Field(default=0, ge=0)
    #: Where workers share rate limits; defaults to the broker when that is Redis.
    redis_url: str | None = None
    provider_timeout_seconds: float = Field(default=10.0, gt=0)

    templates_dir: Path = PROJECT_ROOT / "templates"

    default_timezone: str = "Europe/London"
    phone_region: str = "GB"  # how to read a phone number written without +country code
    holiday_region: str = "GB-ENG"
    send_window: str = "Mon-Sat 09:00-20:00"
    trimester_convention: TrimesterConvention = TrimesterConvention.NHS

    @field_validator("sms_provider", "email_provider", mode="before")
    @classmethod
    def _old_local_name(cls, value: object) -> object:
        return "local" if value == "outbox" else value

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="after")
    def _usable(self) -> Settings:
        try:
            SendWindow.parse(self.send_window, self.holiday_region)
        except WindowError as exc:
            raise ValueError(str(exc)) from None
        _check_providers(self)
        if self.reconcile_after_seconds < self.provider_timeout_seconds:
            # A call that timed out may still be processed by the provider for that long.
            raise ValueError(
                "CAMPAIGNS_RECONCILE_AFTER_SECONDS must be at least "
                "CAMPAIGNS_PROVIDER_TIMEOUT_SECONDS"
            )
        self.second_factor_roles  # noqa: B018 - refuses an unknown role at start-up
        if self.environment == "production":
            self._check_production_secrets()
        return self

    def _check_production_secrets(self) -> None:
        secret = self.secret_key.get_secret_value()
        if secret == DEVELOPMENT_SECRET or len(secret) < 32:
            raise ValueError(
                "CAMPAIGNS_SECRET_KEY must be set to 32+ random characters in production"
            )
        if estimated_bits(secret) < MIN_SECRET_BITS:
            raise ValueError(
                "CAMPAIGNS_SECRET_KEY looks guessable (too few different characters, or a "
                "pattern); make one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        published = {
            "TWILIO_ACCOUNT_SID": (self.twilio_account_sid, TEST_ACCOUNT_SID),
            "TWILIO_AUTH_TOKEN": (_secret(self.twilio_auth_token), TEST_AUTH_TOKEN),
            "SENDGRID_API_KEY": (_secret(self.sendgrid_api_key), TEST_API_KEY),
        }
        for name, (value, sandbox) in published.items():
            if value == sandbox:
                raise ValueError(f"{name} is the sandbox's published test value; not in production")

    @property
    def rate_limit_redis(self) -> str | None:
        if self.redis_url:
            return self.redis_url
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else None

    @property
    def second_factor_roles(self) -> frozenset[Role]:
        """Roles that must sign in with a second factor."""
        chosen = self.require_2fa
        if chosen is None:
            chosen = "all" if self.environment == "production" else "none"
        chosen = chosen.strip().lower()
        if chosen == "all":
            return frozenset(Role)
        if chosen in {"none", ""}:
            return frozenset()
        try:
            return frozenset(parse_role(part) for part in chosen.split(",") if part.strip())
        except ValueError as exc:
            raise ValueError(f"CAMPAIGNS_REQUIRE_2FA: {exc}") from None

    @property
    def staff_base_url(self) -> str:
        return self.staff_url or self.public_url

    @property
    def hosts(self) -> frozenset[str]:
        """Host names requests may use: the public and staff URLs', loopback, and
        CAMPAIGNS_ALLOWED_HOSTS."""
        ours = {urlsplit(url).hostname or "" for url in (self.public_url, self.staff_base_url)}
        extra = (h.strip().lower() for h in self.allowed_hosts.split(","))
        return frozenset({*(h.lower() for h in ours), *LOOPBACK_HOSTS, *(h for h in extra if h)})

    @property
    def https(self) -> bool:
        """Staff cookies are Secure (sent over https only) when staff use https."""
        return self.staff_base_url.lower().startswith("https://")

    @property
    def public_https(self) -> bool:
        return self.public_url.lower().startswith("https://")

    @property
    def embedded(self) -> bool:
        return self.broker_url == EMBEDDED_BROKER

    def window(self) -> SendWindow:
        return SendWindow.parse(self.send_window, self.holiday_region)


def _check_providers(settings: Settings) -> None:
    """The chosen providers' accounts are all there."""
    missing = []
    if settings.sms_provider == "twilio":
        if not settings.twilio_account_sid or not settings.twilio_auth_token:
            missing.append("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        if not (settings.twilio_from or settings.twilio_messaging_service_sid):
            missing.append("TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID")
    if settings.email_provider == "sendgrid":
        if not settings.sendgrid_api_key:
            missing.append("SENDGRID_API_KEY")
        if not settings.sendgrid_from:
            missing.append("SENDGRID_FROM")
    if settings.email_provider == "smtp" and not settings.smtp_from:
        missing.append("CAMPAIGNS_SMTP_FROM")
    if missing:
        raise ValueError("the chosen providers need " + ", ".join(missing))


def estimated_bits(secret: str) -> float:
    """A rough upper bound on a secret's entropy: its length times the Shannon entropy of its
    characters, nothing at all for a run of neighbouring characters ("abcdef...", "aaaa").
    Random tokens (secrets.token_urlsafe(32)) score about 200; a word repeated, far less."""
    if not secret:
        return 0.0
    counts = Counter(secret)
    per_char = -sum(n / len(secret) * math.log2(n / len(secret)) for n in counts.values())
    # Steps of -1, 0 or +1 between characters are what patterns are made of.
    steps = sum(1 for a, b in itertools.pairwise(secret) if abs(ord(a) - ord(b)) <= 1)
    patterned = steps / max(1, len(secret) - 1)
    return per_char * len(secret) * (1 - patterned)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
