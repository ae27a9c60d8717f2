"""A step email's body in a small Markdown: one source gives both the HTML and the plain text.

The dialect (docs/content-format.md has it in staff words):

    # Title                     the email's one main heading, first
    ## Subheading
    Paragraph lines             (lines next to each other are one paragraph)
    - bullet                    one line each; a list may follow a paragraph directly
    !!! urgent Box title        the red safety box; its paragraphs and bullets follow,
    !!!                         and a line of three "!" closes it
    **bold**  [words](https://...)  [address](mailto:...)
    \\*                          a backslash makes the punctuation after it plain text

Anything else is text: "<" and "&" are escaped, so no HTML typed into a body reaches an email.
Mistakes a person should hear about (a box never closed, a second "# " title, a link that is not
https) raise MarkupError naming the line. The HTML carries the inline styles the shared layout
(templates/_layouts/email.html.j2) was written with, for mail clients that drop <style>; the
text is laid out as the text part has always been (a heading line directly above its text, a
blank line between paragraphs).

Jinja runs first (campaigns.rules.content), so a placeholder's value passes through here too:
`escape_value` is that environment's finalize and makes a value plain text, so a first name
cannot open a link or a box.
"""

from __future__ import annotations

import html
import re
import string
from dataclasses import dataclass, field

LINK_STYLE = "color:#0b5394;text-decoration:underline;"
_H1 = '<h1 style="margin:0 0 16px 0;font-size:24px;line-height:1.3;">{}</h1>'
_H2 = '<h2 style="margin:24px 0 8px 0;font-size:18px;line-height:1.3;">{}</h2>'
_BOX_START = (
    '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" '
    'style="margin:0 0 20px 0;">\n'
    '<tr><td class="urgent" style="border-left:6px solid #b3261e;background:#fdf0ef;'
    'color:#1f1f1f;padding:14px 16px;">\n'
    '<h2 style="margin:0 0 8px 0;font-size:18px;line-height:1.3;">{}</h2>'
)
_BOX_END = "</td></tr>\n</table>"
#: Space below a paragraph or list: on the page, inside a box, and the last thing in a box.
_PAGE, _BOX, _LAST = "0 0 16px 0", "0 0 8px 0", "0"

_PUNCTUATION = frozenset(string.punctuation)
_PUNCTUATION_CLASS = "[" + re.escape(string.punctuation) + "]"
_ESCAPED = re.compile(f"\\\\({_PUNCTUATION_CLASS})")
#: What a placeholder's value must not do here: open bold, a link, a box, a heading or a list.
_SPECIAL = re.compile(r"[\\*\[\]()!#\-]")
_MAILTO = re.compile(r"mailto:[^@\s]+@[^@\s]+")
_BOX_LINE = re.compile(r"!!!\s*(?P<kind>[A-Za-z]*)\s*:?\s*(?P<title>.*)")
#: Where inline markup may start: a backslash, "**" or "[".
_MARK = re.compile(r"\\|\*\*|\[")
#: An escaped character (skipped) or the token searched for.
_TOKENS = {
    token: re.compile(f"\\\\{_PUNCTUATION_CLASS}|{re.escape(token)}") for token in ("**", "](", ")")
}


class MarkupError(ValueError):
    """A body that cannot become an email, with the line (of the rendered source) to fix."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class EmailBody:
    html: str
    text: str


def escape_value(value: object) -> str:
    """A placeholder's value as plain text in the Markdown: on one line, punctuation escaped."""
    return _SPECIAL.sub(lambda m: "\\" + m.group(0), " ".join(str(value).splitlines()))


def convert(source: str) -> EmailBody:
    """The HTML body (for the layout's card) and the plain-text body of one email."""
    blocks = _parse(source)
    return EmailBody(
        html="\n".join(_html(block, _PAGE) for block in blocks),
        text=_text(blocks).strip(),
    )


# --- inline: text, **bold** and [links](https://...) ----------------------------------------


@dataclass(frozen=True)
class _Strong:
    parts: tuple[_Inline, ...]


@dataclass(frozen=True)
class _Link:
    parts: tuple[_Inline, ...]
    url: str


_Inline = str | _Strong | _Link


def _inline(text: str, line: int) -> tuple[_Inline, ...]:
    parts: list[_Inline] = []
    plain: list[str] = []
    at = 0
    while (mark := _MARK.search(text, at)) is not None:
        plain.append(text[at : mark.start()])
        at = mark.start()
        if mark.group() == "\\":
            escaped = text[at + 1 : at + 2] in _PUNCTUATION
            plain.append(text[at + 1] if escaped else "\\")
            at += 2 if escaped else 1
            continue
        found: tuple[_Inline, int] | None
        found = _strong(text, at, line) if mark.group() == "**" else _link(text, at, line)
        if found is None:
            plain.append(text[at])
            at += 1
            continue
        node, at = found
        if any(plain):
            parts.append("".join(plain))
        plain = []
        parts.append(node)
    plain.append(text[at:])
    if any(plain):
        parts.append("".join(plain))
    return tuple(parts)


def _find(text: str, token: str, start: int) -> int:
    """Where `token` next occurs from `start`, not counting backslash-escaped characters."""
    for found in _TOKENS[token].finditer(text, start):
        if found.group() == token:
            return found.start()
    return -1


def _strong(text: str, at: int, line: int) -> tuple[_Strong, int] | None:
    end = _find(text, "**", at + 2)
    if end <= at + 2:  # no closing "**", or nothing between them: plain stars
        return None
    return _Strong(_inline(text[at + 2 : end], line)), end + 2


def _link(text: str, at: int, line: int) -> tuple[_Link, int] | None:
    middle = _find(text, "](", at + 1)
    end = _find(text, ")", middle + 2) if middle >= 0 else -1
    if end < 0:
        return None
    words = _inline(text[at + 1 : middle], line)
    url = _ESCAPED.sub(r"\1", text[middle + 2 : end]).strip()
    if not _plain(words).strip():
        raise MarkupError(line, f"the link to “{url}” needs words between [ and ]")
    secure = url.startswith("https://") and len(url) > len("https://")
    if not (secure or _MAILTO.fullmatch(url)) or any(c.isspace() for c in url):
        raise MarkupError(
            line,
            f"the link “{url}” must start with https:// (or be mailto: and an email address)",
        )
    return _Link(words, url), end + 1


def _plain(parts: tuple[_Inline, ...]) -> str:
    """As the text part shows it: bold is plain, a link is its words and then its address."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, _Strong):
            out.append(_plain(part.parts))
        else:
            words, address = _plain(part.parts), part.url.removeprefix("mailto:")
            out.append(words if words == address else f"{words}: {address}")
    return "".join(out)


def _markup(parts: tuple[_Inline, ...]) -> str:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(html.escape(part, quote=False))
        elif isinstance(part, _Strong):
            out.append(f"<strong>{_markup(part.parts)}</strong>")
        else:
            href = html.escape(part.url, quote=True)
            out.append(f'<a href="{href}" style="{LINK_STYLE}">{_markup(part.parts)}</a>')
    return "".join(out)


# --- blocks: headings, paragraphs, lists and the urgent box ----------------------------------


@dataclass
class _Block:
    kind: str  # "h1", "h2", "p" (one paragraph's lines), "ul" (its items), "box" (the title)
    line: int
    parts: list[tuple[_Inline, ...]] = field(default_factory=list)
    inside: list[_Block] = field(default_factory=list)


def _parse(source: str) -> list[_Block]:
    page: list[_Block] = []
    box: _Block | None = None
    open_block: _Block | None = None  # a paragraph or list the next line may continue
    for number, raw in enumerate(source.splitlines(), start=1):
        line = raw.strip()
        blocks = box.inside if box else page
        if not line:
            open_block = None
        elif line.startswith("!!!"):
            box = _box_line(line, number, box, page)
            open_block = None
        elif line.startswith(("# ", "## ")):
            level, _, words = line.partition(" ")
            if box:
                raise MarkupError(
                    number, "a heading cannot go inside an urgent box: close the box first (“!!!”)"
                )
            blocks.append(_Block(f"h{len(level)}", number, [_inline(words.strip(), number)]))
            open_block = None
        else:
            kind = "ul" if line.startswith("- ") else "p"
            if open_block is None or open_block.kind != kind:
                open_block = _Block(kind, number)
                blocks.append(open_block)
            words = line[2:].strip() if kind == "ul" else line
            open_block.parts.append(_inline(words, number))
    if box:
        raise MarkupError(box.line, "this urgent box is never closed: end it with a line “!!!”")
    _check_title(page)
    return page


def _box_line(line: str, number: int, box: _Block | None, page: list[_Block]) -> _Block | None:
    """Open or close the urgent box; returns the box now open, if any."""
    if line == "!!!":
        if box is None:
            raise MarkupError(number, "“!!!” closes an urgent box, but no box is open here")
        if not box.inside:
            raise MarkupError(box.line, "this urgent box is empty: write its advice inside")
        return None
    if box is not None:
        raise MarkupError(
            number, "close the urgent box above (a line “!!!”) before opening another"
        )
    found = _BOX_LINE.fullmatch(line)
    if found is None or found["kind"].lower() != "urgent":
        raise MarkupError(number, "the only box is “!!! urgent” followed by its title")
    if not found["title"].strip():
        raise MarkupError(number, "write the box's title after “!!! urgent”")
    opened = _Block("box", number, [_inline(found["title"].strip(), number)])
    page.append(opened)
    return opened


def _check_title(page: list[_Block]) -> None:
    if not page or page[0].kind != "h1":
        raise MarkupError(
            page[0].line if page else 1, "start the email with its title, on a line beginning “# ”"
        )
    for block in page[1:]:
        if block.kind == "h1":
            raise MarkupError(block.line, "only the title can use “# ”: use “## ” for this heading")


def _html(block: _Block, margin: str) -> str:
    if block.kind in ("h1", "h2"):
        return (_H1 if block.kind == "h1" else _H2).format(_markup(block.parts[0]))
    if block.kind == "p":
        words = " ".join(_markup(line) for line in block.parts)
        return f'<p style="margin:{margin};">{words}</p>'
    if block.kind == "ul":
        items = "".join(f"<li>{_markup(item)}</li>\n" for item in block.parts)
        return f'<ul style="margin:{margin};padding-left:20px;">\n{items}</ul>'
    inside = [
        _html(child, _LAST if index == len(block.inside) - 1 else _BOX)
        for index, child in enumerate(block.inside)
    ]
    return "\n".join([_BOX_START.format(_markup(block.parts[0])), *inside, _BOX_END])


def _text(blocks: list[_Block]) -> str:
    """A heading's line sits directly above what follows it, and a list directly below the
    line before it; otherwise a blank line separates blocks (and always follows the title and
    a box)."""
    out = ""
    previous = ""
    for block in blocks:
        tight = previous in ("h2", "box") or (block.kind == "ul" and previous not in ("h1", "end"))
        out += ("\n" if tight else "\n\n") if previous else ""
        if block.kind == "ul":
            out += "\n".join(f"- {_plain(item)}" for item in block.parts)
        elif block.kind == "p":
            out += " ".join(_plain(line) for line in block.parts)
        else:
            out += _plain(block.parts[0])
        if block.kind == "box":
            out += "\n" + _text(block.inside)
        previous = "end" if block.kind == "box" else block.kind
    return out
