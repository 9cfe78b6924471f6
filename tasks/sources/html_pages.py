"""Reading HTML pages with lxml, with a clear error for a page that is not HTML."""

from __future__ import annotations

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
