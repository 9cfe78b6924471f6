"""arXiv's export API (Atom). Parsed by namespace, never by prefix, because feeds of
different vintages declare their namespaces differently."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import aiohttp
from lxml import etree

from tasks.sources.listing import Listing
from tasks.sources.http import PermanentSourceError, Retrying, SourceError, Throttle, request

ATOM = "http://www.w3.org/2005/Atom"
OPENSEARCH = "http://a9.com/-/spec/opensearch/1.1/"
ARXIV = "http://arxiv.org/schemas/atom"
DEFAULT_CATEGORIES = ("cs.LG", "cs.CL", "cs.AI", "cs.CV")
ABS_ID = re.compile(r"arxiv\.org/abs/(.+?)(v\d+)?$")
#: arXiv's taxonomy (arxiv.org/category_taxonomy): archives, and the subject classes of
#: those archives whose classes are a closed list. Other archives take any `archive.XX`.
SUBJECTS = {
    "cs": "AI AR CC CE CG CL CR CV CY DB DC DL DM DS ET FL GL GR GT HC IR IT LG LO MA MM MS NA NE NI OH OS PF "
          "PL RO SC SD SE SI SY",
    "stat": "AP CO ME ML OT TH", "eess": "AS IV SP SY", "econ": "EM GN TH",
    "q-fin": "CP EC GN MF PM PR RM ST TR", "q-bio": "BM CB GN MN NC OT PE QM SC TO",
    "math": "AC AG AP AT CA CO CT CV DG DS FA GM GN GR GT HO IT KT LO MG MP NA NT OA OC PR QA RA RT SG SP ST",
}
ARCHIVES = {*SUBJECTS, "astro-ph", "cond-mat", "gr-qc", "hep-ex", "hep-lat", "hep-ph", "hep-th", "math-ph",
            "nlin", "nucl-ex", "nucl-th", "physics", "quant-ph"}


def validate_categories(categories: list[str] | tuple[str, ...]) -> list[str]:
    """The categories, checked against arXiv's taxonomy before any request: a typo would
    otherwise list nothing, silently, every night."""
    bad = []
    for cat in categories:
        archive, _, subject = cat.partition(".")
        known = SUBJECTS.get(archive, "").split()
        if archive not in ARCHIVES or (known and subject not in known) or (subject and not re.fullmatch(r"[A-Za-z-]+", subject)):
            bad.append(cat)
    if bad:
        raise PermanentSourceError(f"unknown arXiv categor{'y' if len(bad) == 1 else 'ies'} {', '.join(map(repr, bad))}; "
                                   "use arXiv's names, e.g. cs.LG, stat.ML, cs.CL")
    return list(categories)


class WalkEnded(SourceError):
    """The walk stopped before the end of the results: what was listed is all there is."""


class ArxivPage(Listing):
    start: int = 0
    entries: int = 0  # entries on the page, kept or not: 0 means arXiv answered an empty page


def _text(el, tag: str, ns: str = ATOM) -> str:
    found = el.find(f"{{{ns}}}{tag}")
    return " ".join((found.text or "").split()) if found is not None else ""


def parse_feed(body: bytes, where: str = "arXiv feed") -> ArxivPage:
    """One page of an Atom feed -> papers. An error feed raises SourceError."""
    try:
        root = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as e:
        raise SourceError(f"{where}: malformed XML ({e})") from None
    if root.tag != f"{{{ATOM}}}feed":
        raise SourceError(f"{where}: not an Atom feed (root element {root.tag})")
    entries = root.findall(f"{{{ATOM}}}entry")
    for entry in entries:
        if _text(entry, "title") == "Error" and "/api/errors" in _text(entry, "id"):
            raise PermanentSourceError(f"arXiv rejected the query: {_text(entry, 'summary')}")
    total = _text(root, "totalResults", OPENSEARCH)
    start = _text(root, "startIndex", OPENSEARCH)
    page = ArxivPage(total=int(total) if total else None, start=int(start or 0), entries=len(entries))
    for entry in entries:
        m = ABS_ID.search(_text(entry, "id"))
        if not m:
            page.problems.append(f"{where}: skipped an entry without an arXiv abs id")
            continue
        pdf = next(
            (l.get("href") for l in entry.findall(f"{{{ATOM}}}link")
             if l.get("title") == "pdf" or l.get("type") == "application/pdf"),
            None,
        )
        published = _text(entry, "published")
        primary = entry.find(f"{{{ARXIV}}}primary_category")
        page.add(
            where,
            id=f"arxiv:{m.group(1)}",
            source="arxiv",
            venue="arXiv",
            year=int(published[:4]) if published[:4].isdigit() else None,
            title=_text(entry, "title"),
            authors=[_text(a, "name") for a in entry.findall(f"{{{ATOM}}}author")],
            abstract=_text(entry, "summary"),
            url=f"https://arxiv.org/abs/{m.group(1)}",
            pdf_url=pdf,
            extra={
                "published": published,
                "categories": [c.get("term") for c in entry.findall(f"{{{ATOM}}}category")],
                "primary_category": primary.get("term") if primary is not None else None,
            },
        )
    return page


def build_query(categories: tuple[str, ...] | list[str], search_term: str | None = None,
                since: datetime | None = None, until: datetime | None = None) -> str:
    """arXiv search_query: (cat:A OR cat:B) AND all:"term" AND submittedDate:[a TO b]."""
    parts = ["(" + " OR ".join(f"cat:{c}" for c in categories) + ")"] if categories else []
    if search_term:
        parts.append(f'all:"{search_term}"' if " " in search_term.strip() else f"all:{search_term.strip()}")
    if since:
        fmt = "%Y%m%d%H%M"
        end = (until or datetime.now(timezone.utc)).strftime(fmt)
        parts.append(f"submittedDate:[{since.astimezone(timezone.utc).strftime(fmt)} TO {end}]")
    return " AND ".join(parts) or "all:*"


class ArxivSource:
    """Pages through the export API newest first. `throttle` is awaited before every
    request: the flow passes Prefect's global rate limit (one request per 3 s).

    The walk is bounded: a page that still fails after the request's own retries is
    skipped only while the total is known and at most `max_failed_pages` fail in a row;
    otherwise the walk ends with that failure as its last item. arXiv sometimes answers
    an empty page although `totalResults` says more remain (arxiv.py's
    UnexpectedEmptyPageError): such a page is asked again `empty_page_retries` times,
    then the walk ends and says where the listing was truncated."""

    def __init__(self, base_url: str = "https://export.arxiv.org/api/query", page_size: int = 200,
                 throttle: Throttle | None = None, retrying: Retrying | None = None,
                 max_failed_pages: int = 2, empty_page_retries: int = 3):
        if not 1 <= page_size <= 2000:
            raise ValueError("arXiv page_size must be 1..2000")
        self.base_url, self.page_size, self.throttle = base_url, page_size, throttle
        self.retrying = retrying or Retrying()
        self.max_failed_pages, self.empty_page_retries = max_failed_pages, empty_page_retries

    async def _page(self, session: aiohttp.ClientSession, query: str, start: int) -> ArxivPage:
        params = {"search_query": query, "start": start, "max_results": self.page_size,
                  "sortBy": "submittedDate", "sortOrder": "descending"}
        where = f"arXiv page start={start}"
        resp = await request(session, "GET", self.base_url, params=params, throttle=self.throttle,
                             retrying=self.retrying, ok=frozenset({200, 400}))
        page = parse_feed(resp.body, where)
        if resp.status == 400:
            raise SourceError(f"{where}: HTTP 400 without an error entry")
        return page

    async def pages(self, session: aiohttp.ClientSession, query: str,
                    max_papers: int | None = None) -> AsyncIterator[ArxivPage | SourceError]:
        """Yield each page, or the SourceError a page raised; see the class for the bounds."""
        start, seen, total, failed, empty = 0, 0, None, 0, 0
        while True:
            try:
                page = await self._page(session, query, start)
            except SourceError as e:
                failed += 1
                if isinstance(e, PermanentSourceError):
                    yield e
                    return
                if total is None or failed > self.max_failed_pages:
                    yield WalkEnded(f"arXiv walk ended at start={start} after {failed} failed page(s) "
                                      f"in a row; listed {seen} of {total if total is not None else '?'}: {e}")
                    return
                yield e
                start += self.page_size
                continue
            failed = 0
            total = page.total if page.total is not None else total
            if not page.entries and total is not None and start < total:
                empty += 1
                if empty <= self.empty_page_retries:
                    continue  # the same page again, through the throttle
                yield WalkEnded(f"arXiv answered an empty page at start={start} {empty} times although "
                                  f"totalResults={total}: listing truncated at {seen} of {total}")
                return
            empty = 0
            yield page
            seen += len(page.papers)
            start += self.page_size
            if not page.entries or start >= (total or 0) or (max_papers and seen >= max_papers):
                return
