"""The checks on a step's words (campaigns.rules.content_checks): every shipped step passes, and
each rule refuses the mistake it is for, naming the part and saying what to do in staff words.

Each failing case is one change to a small safety step (topic "clot") that passes as written.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from campaigns.bootstrap import clinic_from
from campaigns.rules.catalog import Catalog
from campaigns.rules.content import ContentRenderer
from campaigns.rules.content_checks import (
    BODY,
    SMS,
    SUBJECT,
    StepContent,
    check_campaigns,
    check_step,
    step_content,
)
from campaigns.rules.vocabulary import Channel, StepKind
from campaigns.settings import Settings

SETTINGS = Settings()
CLINIC = clinic_from(SETTINGS)
START = "{{ clinic.short_name }}: "
STOP = " Reply STOP to end"
SMS_TEXT = f"{START}1 leg swollen or sore? Call 111 today. Breathless or chest pain: 999.{STOP}"
BODY_TEXT = """\
# Know the signs

Hello {{ first_name }},

!!! urgent Call 111 today if 1 leg is swollen
**Call 999** if you are short of breath or have chest pain.
!!!

{% if discreet %}Your risk is higher now.{% else %}Pregnancy makes a clot more likely.{% endif %}
"""
GOOD = StepContent(
    kind=StepKind.SAFETY,
    topic="clot",
    channels=(Channel.SMS, Channel.EMAIL),
    language="en",
    sms=SMS_TEXT,
    subject="Your {{ clinic.short_name }} leg-care safety tip",
    body=BODY_TEXT,
)


def problems(content: StepContent) -> list[tuple[str, str]]:
    return [(p.field, p.message) for p in check_step(content, CLINIC).problems]


def test_every_shipped_step_passes_and_its_text_is_measured() -> None:
    catalog = Catalog.load(SETTINGS.templates_dir)
    renderer = ContentRenderer(SETTINGS.templates_dir, CLINIC)
    check_campaigns(catalog.values(), renderer)  # raises on any problem
    for campaign in catalog.values():
        for step in campaign.steps:
            content = step_content(campaign.key, step, "en", renderer.source)
            report = check_step(content, CLINIC)
            assert report.problems == (), step.key
            if Channel.SMS in step.channels:
                assert [m.discreet for m in report.sms] == [False, True]
                assert all(m.encoding.encoding == "GSM-7" for m in report.sms)
                assert all(m.encoding.segments == 1 for m in report.sms)


def test_the_example_step_passes_and_both_wordings_are_measured() -> None:
    content = replace(GOOD, sms=f"{START}{{% if discreet %}}a{{% else %}}abc{{% endif %}}{STOP}")
    report = check_step(replace(content, kind=StepKind.EDUCATION), CLINIC)
    assert report.problems == ()
    assert [(m.discreet, m.encoding.units) for m in report.sms] == [(False, 28), (True, 26)]
    assert report.sms[0].text == f"{CLINIC.short_name}: abc Reply STOP to end"
    assert problems(GOOD) == []


@pytest.mark.parametrize(
    ("change", "part", "said"),
    [
        pytest.param(
            {"sms": f"{START}111 999 chest pain {'x' * 129}{STOP}"},
            SMS,
            "too long for one text: 173 characters of 160, with “Santi” as the clinic's name. "
            "Shorten it by 13.",
            id="too-long",
        ),
        pytest.param(
            {"sms": SMS_TEXT.replace("sore?", "sore’?")},
            SMS,
            "“’” is not in the plain text alphabet",
            id="not-gsm7",
        ),
        pytest.param(
            {"sms": SMS_TEXT.replace(START, "Santi: ")},
            SMS,
            "start with the clinic's name, “{{ clinic.short_name }}:”",
            id="name-typed-in",
        ),
        pytest.param(
            {"sms": SMS_TEXT.replace(STOP, "")},
            SMS,
            "end with the opt-out words “Reply STOP to end”",
            id="no-opt-out",
        ),
        pytest.param(
            {"sms": SMS_TEXT.replace("1 leg", "{{ first_name }}, 1 leg")},
            SMS,
            "“first_name” cannot be used here, so no personal detail slips in",
            id="name-in-sms",
        ),
        pytest.param(
            {"subject": "Hello {{ first_name }}"},
            SUBJECT,
            "“first_name” cannot be used here",
            id="name-in-subject",
        ),
        pytest.param(
            {"body": BODY_TEXT.replace("Hello", "Due {{ due_date }}")},
            BODY,
            "“due_date” cannot be used here",
            id="due-date-in-body",
        ),
        pytest.param(
            {"sms": SMS_TEXT.replace("1 leg", "{{ clinic.nhs_number }} 1 leg")},
            SMS,
            "line 1: the clinic has no “nhs_number”; it has clinic.name, clinic.short_name",
            id="no-such-clinic-detail",
        ),
        pytest.param(
            {"body": BODY_TEXT.replace("Hello", "{{ clinic }}")},
            BODY,
            "line 3: name one clinic detail, such as clinic.name",
            id="whole-clinic",
        ),
        pytest.param(
            {"sms": SMS_TEXT.replace("1 leg swollen", "DVT signs")},
            SMS,
            "do not name a condition in a text (“DVT”)",
            id="diagnosis-word",
        ),
        pytest.param(
            {"sms": SMS_TEXT.replace("1 leg", "{% if discreet %}baby{% else %}1 leg{% endif %}")},
            SMS,
            "the discreet wording must not mention pregnancy (“baby”)",
            id="discreet-sms",
        ),
        pytest.param(
            {"body": BODY_TEXT.replace("Your risk is higher now", "Your bump grows")},
            BODY,
            "the discreet wording must not mention pregnancy (“bump”)",
            id="discreet-body",
        ),
        pytest.param(
            {"sms": SMS_TEXT.replace("{{ clinic.short_name }}", "{{ clinic.short_name }")},
            SMS,
            "line 1: a placeholder or {% if %} is not written right (unexpected '}')",
            id="syntax",
        ),
        pytest.param(
            {"body": BODY_TEXT.replace("{% endif %}", "")},
            BODY,
            "is not written right (Unexpected end of template",
            id="syntax-unclosed-if",
        ),
        pytest.param(
            {"body": BODY_TEXT + '{% include "_layouts/email.txt.j2" %}\n'},
            BODY,
            "line 10: write the words here, not another template's",
            id="include",
        ),
        pytest.param(
            {"sms": SMS_TEXT.replace(" 999.", " an ambulance.")},
            SMS,
            "a safety message on “clot” must keep “999”: it is one",
            id="safety-sms-999",
        ),
        pytest.param(
            {"body": BODY_TEXT.replace(" or have chest pain", "")},
            BODY,
            "a safety message on “clot” must keep “chest pain” (when to call 999)",
            id="safety-body-chest-pain",
        ),
        pytest.param(
            {"body": BODY_TEXT.replace("Call 111 today", "Call us")},
            BODY,
            "must keep “111” or “maternity unit”",
            id="safety-body-111",
        ),
        pytest.param(
            {"body": BODY_TEXT.replace("have chest pain.\n!!!", "have chest pain.")},
            BODY,
            "line 5: this urgent box is never closed: end it with a line “!!!”",
            id="markup",
        ),
        pytest.param({"body": "  \n"}, BODY, "this is empty: write it first", id="empty-body"),
    ],
)
def test_each_rule_refuses_its_mistake_in_staff_words(
    change: dict[str, Any], part: str, said: str
) -> None:
    found = problems(replace(GOOD, **change))
    assert any(field == part and said in message for field, message in found), found


def test_a_problem_in_only_one_wording_says_which() -> None:
    sms = SMS_TEXT.replace("999.", "{% if discreet %}an ambulance{% else %}999{% endif %}.")
    assert problems(replace(GOOD, sms=sms)) == [
        (
            SMS,
            "a safety message on “clot” must keep “999”: it is one of the lines that keep her "
            "safe (discreet wording only)",
        )
    ]


def test_a_markup_mistake_in_one_wording_says_which() -> None:
    body = BODY_TEXT.replace("# Know", "{% if not discreet %}# {% endif %}Know")
    assert problems(replace(GOOD, body=body)) == [
        (
            BODY,
            "line 1: start the email with its title, on a line beginning “# ” "
            "(discreet wording only)",
        )
    ]


def test_other_topics_need_111_or_999_and_education_steps_need_neither() -> None:
    quiet = replace(GOOD, sms=f"{START}stretch your calves.{STOP}", body="# Stretch\n\nGently.")
    assert problems(replace(quiet, kind=StepKind.EDUCATION)) == []
    unknown = problems(replace(quiet, topic="new-topic"))
    assert {field for field, message in unknown if "“111” or “999”" in message} == {SMS, BODY}


def test_a_translation_is_not_held_to_english_words_or_one_segment() -> None:
    polish = replace(
        GOOD,
        language="pl",
        sms=f"{START}jedna noga spuchnięta? Zadzwoń 111. Ból w klatce piersiowej: 999. "
        "Odpisz STOP, aby zakończyć, a wiadomości przestaną przychodzić.",
        body="# Znaki\n\nZadzwoń 111 lub 999.",
    )
    report = check_step(polish, CLINIC)
    assert report.problems == ()
    assert report.sms[0].encoding.encoding == "UCS-2"
    assert report.sms[0].encoding.segments > 1
    found = problems(replace(polish, sms=polish.sms.replace("STOP", "koniec")))
    assert found == [(SMS, "keep the word STOP, so she can end the texts")]


def test_only_the_channels_a_step_uses_are_checked() -> None:
    email_only = replace(GOOD, channels=(Channel.EMAIL,), sms="")
    report = check_step(email_only, CLINIC)
    assert report.problems == () and report.sms == ()
    assert problems(replace(GOOD, channels=(Channel.SMS,), body="", subject="")) == []
