"""NeurIPS and MLSys proceedings: the same site software serves both
(proceedings.neurips.cc, proceedings.mlsys.org). The year listing is `ul.paper-list > li`;
each abstract page carries `citation_*` meta tags and `p.paper-abstract`."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import aiohttp

from tasks.sources.html_pages import container_text, listing_entries, meta, parse_html, rebase, text_of
from tasks.sources.http import Retrying, SourceError, request
from tasks.sources.listing import Listing

SITES = {"neurips": ("NeurIPS", "https://proceedings.neurips.cc"), "mlsys": ("MLSys", "https://proceedings.mlsys.org")}
HOSTS = ("proceedings.neurips.cc", "papers.nips.cc", "papers.neurips.cc", "proceedings.mlsys.org")
#: `-Abstract.html` (before 2022), `-Abstract-Conference.html`, `-Abstract-round1.html` (2021
#: Datasets & Benchmarks), `-Abstract-mlsys2023.html`, `-Abstract-Datasets_and_Benchmarks_Track.html`, ...
HASH = re.compile(r"/hash/([0-9a-f]{32})-Abstract(?:-([A-Za-z0-9_]+))?\.html$")
ABSTRACT = r'<p\b[^>]*class="[^"]*\bpaper-abstract\b[^"]*"[^>]*>'
MAX_SEE_ALSO = 4  # other volumes of the same year a year page links to (2025: the main track's)
TRACK_NAMES = {"": "main", "conference": "main", "main_conference": "main", "main": "main",
               "datasets_and_benchmarks": "Datasets_and_Benchmarks", "round1": "Datasets_and_Benchmarks",
               "round2": "Datasets_and_Benchmarks", "creative_ai": "Creative_AI", "position_paper": "Position_Paper"}


def track_name(token: str | None) -> str:
    """A track token or label ("Conference", "round1", "Datasets_and_Benchmarks_Track",
    "Datasets and Benchmarks Track", "mlsys2023") -> one name per track, as OpenReview's."""
    t = "_".join((token or "").strip().lower().split()).removesuffix("_track")
    if re.fullmatch(r"mlsys\d{4}", t):
        return "main"
    return TRACK_NAMES.get(t, (token or "").strip().replace(" ", "_").removesuffix("_Track"))


def pdf_url_for(abstract_url: str) -> str:
    """`.../hash/<h>-Abstract-Conference.html` -> `.../file/<h>-Paper-Conference.pdf`."""
    return abstract_url.replace("/hash/", "/file/").replace("-Abstract", "-Paper").removesuffix(".html") + ".pdf"


def parse_listing(body: bytes | str, site: str, year: int, base_url: str) -> Listing:
    """A year page -> papers (titles, authors, links; abstracts come from each paper's page)."""
    venue = SITES[site][0]
    where = f"{venue} {year} listing"
    items, listing = listing_entries(body, where, "ul.paper-list > li", "no ul.paper-list > li entries")
    for i, li in enumerate(items):
        link = li.cssselect('a[title="paper title"]') or li.cssselect("a")
        href = link[0].get("href", "") if link else ""
        m = HASH.search(href.split("?")[0])
        if not m:
            listing.problems.append(f"{where}: entry #{i} has no abstract link with a paper hash")
            continue
        # root-relative links are joined to base_url itself, so a mirror under a path works
        url = base_url + href if href.startswith("/") else urljoin(base_url + "/", href)
        authors = li.cssselect("span.paper-authors") or li.cssselect("i")
        listing.add(
            f"{where} entry #{i}",
            id=f"{site}:{m.group(1)}",
            source=site,
            venue=venue,
            year=year,
            title=text_of(link[0]),
            authors=[a.strip() for a in text_of(authors[0]).split(",") if a.strip()] if authors else [],
            url=url,
            pdf_url=pdf_url_for(url),
            extra={"track": track_name(m.group(2)), "track_token": m.group(2) or li.get("data-track") or None},
        )
    return listing


def see_also(body: bytes | str, year: int) -> list[str]:
    """Other volumes of the same year that a year page points to (`p.book-see-also`)."""
    doc = parse_html(body, "year page")
    hrefs = [a.get("href", "") for a in doc.cssselect("p.book-see-also a")]
    return [h for h in hrefs if h.startswith(f"/paper_files/paper/{year}/")][:MAX_SEE_ALSO]


def parse_abstract_page(body: bytes | str, where: str = "abstract page", base_url: str | None = None) -> dict:
    """An abstract page -> abstract (read raw: see `container_text`), authors, PDF link
    (moved onto `base_url`) and the track the page names (`span.paper-track`)."""
    doc = parse_html(body, where)
    title = meta(doc, "citation_title")
    abstract = container_text(body, ABSTRACT, "p")
    if not title and abstract is None:
        raise SourceError(f"{where}: neither citation_title nor p.paper-abstract found")
    track = doc.cssselect("span.paper-track")
    pdf = next(iter(meta(doc, "citation_pdf_url")), None)
    return {
        "abstract": abstract or next(iter(meta(doc, "citation_abstract")), ""),
        "authors": meta(doc, "citation_author"),
        "pdf_url": rebase(pdf, HOSTS, base_url) if base_url else pdf,
        "title": title[0] if title else None,
        "track": track_name(text_of(track[0])) if track else None,
    }


class ProceedingsSource:
    def __init__(self, site: str, base_url: str | None = None, retrying: Retrying | None = None):
        if site not in SITES:
            raise ValueError(f"unknown proceedings site {site!r}")
        self.site = site
        self.base_url = (base_url or SITES[site][1]).rstrip("/")
        self.retrying = retrying or Retrying()

    async def list_year(self, session: aiohttp.ClientSession, year: int, track: str | None = None) -> Listing:
        """The year page and the volumes of that year it points to, each paper once; only
        `track`'s papers when given."""
        resp = await request(session, "GET", f"{self.base_url}/paper_files/paper/{year}", retrying=self.retrying)
        listing = parse_listing(resp.body, self.site, year, self.base_url)
        for path in see_also(resp.body, year):
            try:
                more = await request(session, "GET", self.base_url + path, retrying=self.retrying)
                listing.extend(parse_listing(more.body, self.site, year, self.base_url))
            except SourceError as e:
                listing.problems.append(str(e))
        seen: set[str] = set()
        listing.papers = [p for p in listing.papers if not (p.id in seen or seen.add(p.id))]
        if track:
            listing.papers = [p for p in listing.papers if p.extra.get("track") == track_name(track)]
            if not listing.papers:
                listing.problems.append(f"{SITES[self.site][0]} {year}: no papers in track {track!r}")
        listing.total = len(listing.papers)
        return listing

    async def details(self, session: aiohttp.ClientSession, url: str) -> dict:
        resp = await request(session, "GET", rebase(url, HOSTS, self.base_url), retrying=self.retrying)
        return parse_abstract_page(resp.body, f"{SITES[self.site][0]} abstract page {url}", self.base_url)
