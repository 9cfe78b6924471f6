"""Reading HTML pages with lxml, with a clear error for a page that is not HTML."""

from __future__ import annotations

import html as html_lib
import re
from urllib.parse import urlsplit

from lxml import html

from tasks.sources.http import SourceError
from tasks.sources.listing import Listing


def parse_html(body: bytes | str, where: str):
    if not body or not (body.strip() if isinstance(body, bytes) else body.strip()):
        raise SourceError(f"{where}: empty page")
    try:
        return html.fromstring(body)
    except Exception as e:  # lxml raises ParserError / XMLSyntaxError on garbage
        raise SourceError(f"{where}: malformed HTML ({e})") from None


def text_of(el) -> str:
    return " ".join(el.text_content().split()) if el is not None else ""


def meta(doc, name: str) -> list[str]:
    """Every `<meta name=... content=...>` value for `name`, in page order."""
    return [m.get("content", "").strip() for m in doc.xpath(f'//meta[@name="{name}"]')]


def listing_entries(body: bytes | str, where: str, selector: str, missing: str):
    """A listing page's entries and an empty Listing to fill from them; a page with no
    entries is a problem on that listing, not an error."""
    entries = parse_html(body, where).cssselect(selector)
    listing = Listing(total=len(entries))
    if not entries:
        listing.problems.append(f"{where}: {missing}")
    return entries, listing


# -- free text inside a container, read from the raw page -------------------------------
# An abstract is free text: `2<p<\infty` or `a<b and c>d` in it are not markup, but an HTML
# parser (and a browser) reads them as tags, cuts the abstract and swallows what follows.
# So we read the container's raw content up to its own end, strip only genuine inline tags,
# and keep every other `<` as text.
INLINE = "em|i|b|strong|sub|sup|u|s|small|code|tt|span|a|br|font|mark|var|q|cite|abbr|wbr"
BLOCK_END = re.compile(r"</(?:section|div|article|body|main|td|li|ul|ol|table|header|footer)\s*>|<h[1-6][\s>]", re.I)
#: A real tag: a known name, then nothing, or attributes that have values (`<b and c>` has none).
REAL_TAG = re.compile(
    rf"</?(?P<name>{INLINE}|p|div|h[1-6])(?:\s+[\w:-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>\"']+))*\s*/?>", re.I)
MAX_ABSTRACT_CHARS = 20_000


def container_text(body: bytes | str, opening: str, tag: str) -> str | None:
    """The text of the first element whose opening tag matches `opening` (a regex), read
    up to its own closing `</tag>` (nested `<tag>`s counted), or to the end of the block
    around it where the site leaves it unclosed; None when there is no such element."""
    page = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    start = re.search(opening, page, re.I)
    if not start:
        return None
    pos, depth, parts = start.end(), 1, []
    end_of_block = BLOCK_END.search(page, pos)
    limit = min(end_of_block.start() if end_of_block and tag.lower() == "p" else len(page),
                pos + MAX_ABSTRACT_CHARS * 4)
    for m in REAL_TAG.finditer(page, pos, limit):
        parts.append(page[pos:m.start()])
        pos = m.end()
        name, closing = m.group("name").lower(), m.group(0).startswith("</")
        if name == tag.lower():
            depth += -1 if closing else 1
            if depth == 0:
                break
        if name in ("p", "div", "br") or name.startswith("h"):
            parts.append(" ")
    else:
        parts.append(page[pos:limit])
    text = " ".join(html_lib.unescape("".join(parts)).split())
    return text[:MAX_ABSTRACT_CHARS]


def rebase(url: str | None, hosts: tuple[str, ...], base_url: str) -> str | None:
    """A link to the site itself, moved onto `base_url` (a mirror, the replay server);
    links to other hosts are left alone."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.netloc.lower() not in hosts:
        return url
    return base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
