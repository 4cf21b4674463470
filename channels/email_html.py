"""An HTML mail body as the text a person reads, in time linear in its size.

The stdlib `html.parser.HTMLParser` is not used: on this Python (3.11.7) it takes time
quadratic or worse in hostile input (`"<a " * 8000`, 24 KB, takes 22 s; CVE-2025-6069), and
one such mail would hold the mailbox. Mail needs little of HTML: text between tags, line
breaks for block elements, `<blockquote>` as '>' lines (so the quote stripper treats it like
plain-text quoting), `<pre>` kept as is, and style/script/head/title dropped. Every regular
expression here is possessive or bounded by the next '<' or '>', and each character is
visited a bounded number of times.
"""

from __future__ import annotations

import re
from html import unescape

MAX_HTML = 2 * 1024 * 1024  # far more markup than the 50 000 characters of text kept
# A tag, a comment's start, or a declaration / processing instruction. A '<' that starts
# none of them is text, as in a browser.
TOKEN_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9:-]*+)[^<>]*+>|<!--|<[!?][^<>]*+>")
BLOCKS = frozenset(
    {"p", "div", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6"}
)
# Hidden until their end tag; one that never ends hides the rest, as in a browser.
RAW_TEXT = {name: re.compile(rf"</{name}\s*+>", re.I) for name in ("style", "script")}
# Hidden until their end tag; one that never ends is ignored (sloppy HTML forgets </head>).
HIDDEN = {name: re.compile(rf"</{name}\s*+>", re.I) for name in ("head", "title")}
SPACE_RE = re.compile(r"\s+")
TAG_RE = re.compile(r"<[^<>]*+>")


class _Text:
    """The lines of text so far, with the state of <blockquote> and <pre>."""

    def __init__(self) -> None:
        self.lines: list[str] = [""]
        self.quote = 0
        self.pre = 0

    def newline(self) -> None:
        self.lines.append("")

    def start(self, tag: str) -> None:
        if tag == "blockquote":
            self.quote += 1
        elif tag == "pre":
            self.pre += 1
        if tag == "br" or tag in ("blockquote", "pre") or tag in BLOCKS:
            self.newline()

    def end(self, tag: str) -> None:
        if tag == "blockquote":
            self.quote = max(0, self.quote - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in ("blockquote", "pre") or tag in BLOCKS:
            self.newline()

    def data(self, raw: str) -> None:
        text = unescape(raw)
        if not self.pre:
            self._add(SPACE_RE.sub(" ", text))
            return
        for i, chunk in enumerate(text.split("\n")):
            if i:
                self.newline()
            self._add(chunk)

    def _add(self, text: str) -> None:
        if not text:
            return
        if not self.lines[-1] and self.quote:
            self.lines[-1] = "> " * self.quote
        self.lines[-1] += text

    def text(self) -> str:
        return "\n".join(
            line.strip() if not line.startswith(">") else line.rstrip() for line in self.lines
        )


def html_lines(html: str) -> str:
    """The text of `html`, one line per line break or block, before tidying."""
    out = _Text()
    html = html[:MAX_HTML]
    pos = 0
    unclosed: set[str] = set()  # no end tag after this point: never searched for again
    while pos < len(html):
        match = TOKEN_RE.search(html, pos)
        if match is None:
            out.data(html[pos:])
            break
        if match.start() > pos:
            out.data(html[pos : match.start()])
        pos = match.end()
        if match.group(0) == "<!--":
            close = html.find("-->", pos)
            pos = len(html) if close < 0 else close + 3  # an open comment hides the rest
            continue
        name = (match.group(2) or "").lower()
        if not name:
            continue  # <!DOCTYPE …>, <?xml …?>
        if match.group(1):
            out.end(name)
        elif name in RAW_TEXT:
            close = RAW_TEXT[name].search(html, pos)
            pos = close.end() if close is not None else len(html)
        elif name in HIDDEN and name not in unclosed:
            close = HIDDEN[name].search(html, pos)
            if close is not None:
                pos = close.end()
            else:
                unclosed.add(name)
        elif name not in HIDDEN:
            out.start(name)
    return out.text()


def html_fallback(html: str) -> str:
    """Every tag dropped, nothing else: for HTML whose structure hides all of its text."""
    return unescape(TAG_RE.sub(" ", html[:MAX_HTML])).strip()
