"""The reply rules (docs/clinical-safety.md) as a table, birth dates in texts, booking tokens,
and properties: a text never ends a programme."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.answering import with_provider_keyword
from campaigns.rules.keywords import Intent, classify, load_reader
from campaigns.rules.links import ExpiredTokenError, LinkSigner, TokenError
from campaigns.rules.replies import Action, Severity, Situation, birth_date_in, decide

ROOT = Path(__file__).resolve().parents[2]
LEXICON = load_reader(ROOT / "templates" / "_keywords")
PATIENT = Situation(known=True)
OPTED_OUT = Situation(known=True, opted_out=True)
STRANGER = Situation(known=False)


def answer(
    text: str, situation: Situation = PATIENT
) -> tuple[tuple[str, ...], set[Action], str | None]:
    found = classify(text, LEXICON, opted_out=situation.opted_out)
    decision = decide(with_provider_keyword(found, situation.opt_out_type), situation)
    alert = decision.alert.severity.value if decision.alert else None
    return decision.replies, set(decision.actions), alert


@pytest.mark.parametrize(
    ("text", "situation", "replies", "actions", "alert"),
    [
        ("chest pain", PATIENT, ("emergency",), {Action.ALERT, Action.MARKETING_HOLD}, "red"),
        (
            "baby not moving",
            PATIENT,
            ("maternity_movement",),
            {Action.ALERT, Action.MARKETING_HOLD},
            "red",
        ),
        (
            "my leg is swollen and warm",
            PATIENT,
            ("leg",),
            {Action.ALERT, Action.MARKETING_HOLD},
            "amber",
        ),
        # leg plus headache: both AMBER answers, the more urgent (pre-eclampsia) first
        (
            "swollen leg and a bad headache",
            PATIENT,
            ("pre_eclampsia", "leg"),
            {Action.ALERT, Action.MARKETING_HOLD},
            "amber",
        ),
        # a danger sign beside BOOK: the safety answer only
        (
            "book pls my calf is hot",
            PATIENT,
            ("leg",),
            {Action.ALERT, Action.MARKETING_HOLD},
            "amber",
        ),
        # a danger sign beside an opt-out: safety answer, opt-out applied, one confirmation
        (
            "stop texting me, I am bleeding",
            PATIENT,
            ("maternity_bleeding", "opt_out"),
            {Action.ALERT, Action.MARKETING_HOLD, Action.OPT_OUT},
            "red",
        ),
        # after STOP: danger signs still answered
        ("my leg is swollen", OPTED_OUT, ("leg",), {Action.ALERT, Action.MARKETING_HOLD}, "amber"),
        # A loss told now holds everything; staff confirm or clear it. A text never ends it.
        ("I lost the baby", PATIENT, ("loss",), {Action.ALERT, Action.LOSS_HOLD}, "amber"),
        ("I lost the baby", OPTED_OUT, (), {Action.ALERT, Action.LOSS_HOLD}, "amber"),
        (
            "miscarried and bleeding heavily",
            PATIENT,
            ("maternity_bleeding", "loss"),
            {Action.ALERT, Action.MARKETING_HOLD, Action.LOSS_HOLD},
            "red",
        ),
        # A mention of loss: no condolence, no hold, a person reads it.
        ("my sister had a stillbirth", PATIENT, ("noted",), {Action.ALERT}, "review"),
        (
            "had a miscarriage last year, stop texting",
            PATIENT,
            ("opt_out",),
            {
                Action.ALERT,
                Action.OPT_OUT,
            },
            "review",
        ),
        # Every danger sign's answer, most urgent first.
        (
            "chest pain, bleeding and my face is swollen",
            PATIENT,
            ("emergency", "maternity_bleeding", "pre_eclampsia"),
            {Action.ALERT, Action.MARKETING_HOLD},
            "red",
        ),
        # Set aside as negated: the cramp tip, and a person still reads it.
        ("no swelling just cramp", PATIENT, ("cramp",), {Action.ALERT}, "review"),
        # Not English and nobody's list reads it: emailed to staff, from anyone.
        ("merci beaucoup", PATIENT, ("unrecognised",), {Action.ALERT}, "amber"),
        ("merci beaucoup", OPTED_OUT, (), {Action.ALERT}, "amber"),
        ("merci beaucoup", STRANGER, ("unknown_sender",), {Action.ALERT}, "amber"),
        ("STOP", PATIENT, ("opt_out",), {Action.OPT_OUT}, None),
        ("STOP", OPTED_OUT, (), {Action.OPT_OUT}, None),  # one confirmation only, ever
        ("START", OPTED_OUT, ("resubscribe",), {Action.RESUBSCRIBE}, None),
        ("yes", OPTED_OUT, ("resubscribe",), {Action.RESUBSCRIBE}, None),
        ("HELP", OPTED_OUT, ("help",), set(), None),  # HELP is answered after STOP too
        ("book", OPTED_OUT, (), set(), None),  # after STOP, nothing but safety, START, HELP
        ("hello?", OPTED_OUT, (), {Action.ALERT}, "review"),  # staff still read it
        ("baby born!", OPTED_OUT, (), {Action.ALERT, Action.BIRTH_REPORTED}, "routine"),
        ("Book pls", PATIENT, ("book",), {Action.BOOKING_LINK}, None),
        ("cramp again tonight", PATIENT, ("cramp",), set(), None),
        (
            "she was born yesterday",
            PATIENT,
            ("born",),
            {Action.ALERT, Action.BIRTH_REPORTED},
            "routine",
        ),
        ("what time is it", PATIENT, ("unrecognised",), {Action.ALERT}, "review"),
        ("what time is it", STRANGER, ("unknown_sender",), {Action.ALERT}, "review"),
        ("we lost the baby", STRANGER, ("unknown_sender",), {Action.ALERT}, "amber"),
        ("bleeding", STRANGER, ("maternity_bleeding",), {Action.ALERT}, "red"),
        ("STOP", STRANGER, ("opt_out",), {Action.OPT_OUT}, None),
        ("HELP", STRANGER, ("help",), set(), None),
        # Twilio's Advanced Opt-Out already answered: act, but send nothing more
        ("STOP", Situation(known=True, opt_out_type="STOP"), (), {Action.OPT_OUT}, None),
        ("arret", Situation(known=True, opt_out_type="STOP"), (), {Action.OPT_OUT}, None),
        ("HELP", Situation(known=True, opt_out_type="HELP"), (), set(), None),
    ],
)
def test_reply_rules(
    text: str,
    situation: Situation,
    replies: tuple[str, ...],
    actions: set[Action],
    alert: str | None,
) -> None:
    assert answer(text, situation) == (replies, actions, alert)


def test_book_within_24_hours_of_a_safety_alert_gets_the_safety_answer_again() -> None:
    situation = Situation(known=True, recent_safety_reply="leg")
    replies, actions, alert = answer("BOOK", situation)
    assert replies == ("leg",)
    assert Action.BOOKING_LINK not in actions
    assert alert == Severity.AMBER.value


def test_a_birth_date_after_the_question_is_taken_for_staff_to_confirm() -> None:
    situation = Situation(known=True, awaiting_birth_date=True, birth_date=date(2026, 5, 3))
    assert answer("03/05", situation) == (("birth_date",), {Action.BIRTH_DATE}, None)
    with_date = Situation(known=True, birth_date=date(2026, 5, 3))
    assert answer("born on 3 may", with_date)[0] == ("birth_date",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("03/05", date(2026, 5, 3)),
        ("3/5/26", date(2026, 5, 3)),
        ("3.5.2026", date(2026, 5, 3)),
        ("born on the 3rd of May", date(2026, 5, 3)),
        ("May 3rd", date(2026, 5, 3)),
        ("28/12", date(2025, 12, 28)),  # no year, not in the future: last December
        ("31/02", None),
        ("no date here", None),
        ("1/1/2027", None),  # in the future
    ],
)
def test_birth_dates_written_the_uk_way(text: str, expected: date | None) -> None:
    assert birth_date_in(text, date(2026, 6, 1)) == expected


def test_booking_tokens_are_short_signed_and_expire() -> None:
    signer = LinkSigner(b"secret", "https://sms.example.org")
    now = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    url = signer.booking_url(4242, now)
    token = url.rsplit("/", 1)[1]
    assert len(token) == 26 and len(url) == len(signer.longest_booking_url())
    assert signer.verify_booking(token, now + timedelta(days=13, hours=23)) == 4242
    with pytest.raises(ExpiredTokenError):
        signer.verify_booking(token, now + timedelta(days=14, minutes=1))
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    with pytest.raises(TokenError):
        signer.verify_booking(tampered, now)
    with pytest.raises(TokenError):
        LinkSigner(b"other", "https://sms.example.org").verify_booking(token, now)
    with pytest.raises(TokenError):
        signer.verify_booking("not a token!", now)
    # a token for another purpose never opens a booking
    unsubscribe = signer.unsubscribe_url(4242, 1).rsplit("/", 1)[1]
    with pytest.raises(TokenError):
        signer.verify_booking(unsubscribe, now)


def test_provider_keyword_counts_even_when_our_words_miss_it() -> None:
    found = with_provider_keyword(classify("arret", LEXICON), "STOP")
    assert found.intent is Intent.OPT_OUT
    assert found.words == ["OptOutType=STOP"]


ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200)
LOSS_WORDS = [
    "I had a miscarriage",
    "we lost the baby",
    "my sister had a stillbirth",
    "m/c last year",
    "scan showed no heartbeat",
    "is this a sign of miscarriage?",
]


@settings(max_examples=400, deadline=None)
@given(
    ANY_TEXT,
    st.sampled_from(LOSS_WORDS),
    ANY_TEXT,
    st.sampled_from([PATIENT, OPTED_OUT, STRANGER]),
)
def test_a_loss_mention_never_ends_an_enrollment(
    before: str, loss: str, after: str, situation: Situation
) -> None:
    """No text ends a programme: at most a hold that staff confirm or clear, and staff told."""
    decision = decide(classify(f"{before} {loss} {after}", LEXICON), situation)
    assert "end_for_loss" not in {a.value for a in decision.actions}
    assert decision.alert is not None
    if Action.LOSS_HOLD in decision.actions:
        assert situation.known and decision.alert.severity in (Severity.AMBER, Severity.RED)
        assert decision.alert.kind in ("loss", *(i.value for i in Intent))
