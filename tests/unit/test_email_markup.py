"""The email Markdown (campaigns.rules.email_markup): every construct gives the HTML the shared
layout was written for and the text part as it always read; typed HTML and a placeholder's value
stay text; a mistake staff can make names its line. The shipped emails are compared whole in
tests/content/test_templates.py."""

from __future__ import annotations

import pytest

from campaigns.rules.email_markup import MarkupError, convert, escape_value

P = '<p style="margin:0 0 16px 0;">'
BOX_P = '<p style="margin:0 0 8px 0;">'
LAST_P = '<p style="margin:0;">'
LINK = '<a href="{}" style="color:#0b5394;text-decoration:underline;">{}</a>'

SOURCE = """\
# Know the signs

!!! urgent Call 111 today if 1 leg is swollen
These can be signs of a clot. Look out for:
- pain in 1 leg
- swelling

**Call 999** if you are short of breath.
!!!

## Cramp or clot?
A cramp passes.
It eases with stretching.

Ask us: [our website](https://santi.example/help) or
[hello@santi.example](mailto:hello@santi.example).
"""


def test_every_construct_gives_the_layout_html_and_the_text_part() -> None:
    body = convert(SOURCE)
    assert body.html == "\n".join(
        [
            '<h1 style="margin:0 0 16px 0;font-size:24px;line-height:1.3;">Know the signs</h1>',
            '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" '
            'style="margin:0 0 20px 0;">',
            '<tr><td class="urgent" style="border-left:6px solid #b3261e;background:#fdf0ef;'
            'color:#1f1f1f;padding:14px 16px;">',
            '<h2 style="margin:0 0 8px 0;font-size:18px;line-height:1.3;">'
            "Call 111 today if 1 leg is swollen</h2>",
            f"{BOX_P}These can be signs of a clot. Look out for:</p>",
            '<ul style="margin:0 0 8px 0;padding-left:20px;">',
            "<li>pain in 1 leg</li>",
            "<li>swelling</li>",
            "</ul>",
            f"{LAST_P}<strong>Call 999</strong> if you are short of breath.</p>",
            "</td></tr>",
            "</table>",
            '<h2 style="margin:24px 0 8px 0;font-size:18px;line-height:1.3;">Cramp or clot?</h2>',
            f"{P}A cramp passes. It eases with stretching.</p>",
            f"{P}Ask us: {LINK.format('https://santi.example/help', 'our website')} or "
            f"{LINK.format('mailto:hello@santi.example', 'hello@santi.example')}.</p>",
        ]
    )
    assert body.text == (
        "Know the signs\n"
        "\n"
        "Call 111 today if 1 leg is swollen\n"
        "These can be signs of a clot. Look out for:\n"
        "- pain in 1 leg\n"
        "- swelling\n"
        "\n"
        "Call 999 if you are short of breath.\n"
        "\n"
        "Cramp or clot?\n"
        "A cramp passes. It eases with stretching.\n"
        "\n"
        "Ask us: our website: https://santi.example/help or hello@santi.example."
    )


def test_typed_html_and_unknown_markdown_stay_text() -> None:
    body = convert('# Hi\n\n<script>alert("x")</script> & <b>bold</b>\n\n* not a list\n\n### no')
    assert "<script" not in body.html and "<b>" not in body.html
    assert '&lt;script&gt;alert("x")&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;' in body.html
    assert f"{P}* not a list</p>" in body.html
    assert f"{P}### no</p>" in body.html
    assert '<script>alert("x")</script> & <b>bold</b>' in body.text


@pytest.mark.parametrize(
    "value",
    [
        "**Ann** [x](https://evil.example)",
        "Ann\n# Title\n- item\n!!! urgent Box",
        "Ann \\*",
        "<img src=x onerror=alert(1)>",
    ],
)
def test_a_placeholder_value_is_plain_text(value: str) -> None:
    body = convert(f"# Hello {escape_value(value)}\n\nText.")
    assert body.text.splitlines()[0] == "Hello " + " ".join(value.splitlines())
    assert body.html.count("<") == body.html.count("</") * 2  # the h1 and the p, nothing else
    assert "<strong>" not in body.html and "<a " not in body.html


def test_a_backslash_makes_punctuation_plain() -> None:
    body = convert("# A\n\n\\**not bold\\** and \\[not](a link) and C:\\path")
    assert body.text.endswith("**not bold** and [not](a link) and C:\\path")


def test_a_list_follows_a_paragraph_and_a_paragraph_follows_a_list() -> None:
    body = convert("# A\n\nLook:\n- one\n- two\nAfter.")
    assert body.text == "A\n\nLook:\n- one\n- two\n\nAfter."
    assert body.html.endswith(f"<li>two</li>\n</ul>\n{P}After.</p>")


def test_a_last_list_in_a_box_has_no_space_below() -> None:
    body = convert("# A\n\n!!! urgent Signs\n- one\n!!!")
    assert '<ul style="margin:0;padding-left:20px;">' in body.html


@pytest.mark.parametrize(
    ("source", "line", "said"),
    [
        ("Hello\n\n# Title", 1, "start the email with its title"),
        ("", 1, "start the email with its title"),
        ("# A\n\n# B", 3, "only the title can use “# ”"),
        ("# A\n\n!!! urgent Call 999\nText", 3, "never closed"),
        ("# A\n\n!!! urgent Call 999\n!!!", 3, "box is empty"),
        ("# A\n\n!!! urgent\nText\n!!!", 3, "write the box's title"),
        ("# A\n\n!!! warning Careful\nText\n!!!", 3, "the only box is “!!! urgent”"),
        ("# A\n\nText\n!!!", 4, "no box is open"),
        ("# A\n!!! urgent X\nA\n!!! urgent Y", 4, "before opening another"),
        ("# A\n!!! urgent X\n## Inside\n!!!", 3, "a heading cannot go inside"),
        ("# A\n\nSee [us](http://santi.example).", 3, "must start with https://"),
        ("# A\n\nSee [us](javascript:alert(1)).", 3, "must start with https://"),
        ("# A\n\nSee [](https://santi.example).", 3, "needs words"),
    ],
)
def test_a_mistake_names_its_line(source: str, line: int, said: str) -> None:
    with pytest.raises(MarkupError) as refused:
        convert(source)
    assert refused.value.line == line
    assert said in refused.value.message
