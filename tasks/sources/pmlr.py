"""PMLR (proceedings.mlr.press): ICML volumes. The volume page lists every paper as a
`div.paper`; a paper's own page has the abstract and `citation_*` meta tags."""

from __future__ import annotations

import re

import aiohttp

from tasks.sources.html_pages import container_text, listing_entries, meta, parse_html, rebase, text_of
from tasks.sources.http import Retrying, SourceError, request
from tasks.sources.listing import Listing

BASE_URL = "https://proceedings.mlr.press"
HOSTS = ("proceedings.mlr.press",)
ABSTRACT = r'<div\b[^>]*id="abstract"[^>]*>'
#: ICML's PMLR volume for each year.
ICML_VOLUMES = {2013: 28, 2014: 32, 2015: 37, 2016: 48, 2017: 70, 2018: 80, 2019: 97, 2020: 119,
                2021: 139, 2022: 162, 2023: 202, 2024: 235, 2025: 267}
PAPER_KEY = re.compile(r"/(v\d+)/([^/]+?)\.html$")


def _authors(text: str) -> list[str]:
    return [a.strip() for a in re.split(r",\s*|\s+and\s+", text) if a.strip()]


def parse_volume_page(body: bytes | str, volume: str, year: int | None = None, venue: str = "ICML",
                      base_url: str = BASE_URL) -> Listing:
    """A volume index page -> papers (no abstracts: those are on each paper's page). The
    page links absolutely to proceedings.mlr.press: those links move onto `base_url`."""
    where = f"PMLR {volume} volume page"
    blocks, listing = listing_entries(body, where, "div.paper", f"no div.paper blocks (is {volume} a PMLR volume?)")
    for i, block in enumerate(blocks):
        links = {text_of(a).lower(): rebase(a.get("href"), HOSTS, base_url) for a in block.cssselect("p.links a")}
        abs_url = links.get("abs") or ""
        m = PAPER_KEY.search(abs_url)
        if not m:
            listing.problems.append(f"{where}: paper #{i} has no abs link")
            continue
        openreview = links.get("openreview")
        listing.add(
            f"{where} paper #{i}",
            id=f"pmlr:{m.group(1)}/{m.group(2)}",
            source="pmlr",
            venue=venue,
            year=year,
            title=text_of(block.cssselect("p.title")[0]) if block.cssselect("p.title") else "",
            authors=_authors(text_of(block.cssselect("span.authors")[0])) if block.cssselect("span.authors") else [],
            url=abs_url,
            pdf_url=links.get("download pdf"),
            extra={"volume": m.group(1), "openreview_url": openreview,
                   "pages": text_of(block.cssselect("span.info")[0]) if block.cssselect("span.info") else None},
        )
    return listing


def parse_paper_page(body: bytes | str, where: str = "PMLR paper page", base_url: str = BASE_URL) -> dict:
    """A paper page -> abstract (read raw, so a bare `<` in it stays), authors and PDF URL
    from `div#abstract` and `citation_*`."""
    doc = parse_html(body, where)
    abstract = container_text(body, ABSTRACT, "div")
    title = meta(doc, "citation_title")
    if abstract is None and not title:
        raise SourceError(f"{where}: neither div#abstract nor citation_title found")
    return {
        "abstract": abstract or "",
        "authors": meta(doc, "citation_author"),
        "pdf_url": rebase(next(iter(meta(doc, "citation_pdf_url")), None), HOSTS, base_url),
        "title": title[0] if title else None,
    }


class PMLRSource:
    def __init__(self, base_url: str = BASE_URL, retrying: Retrying | None = None):
        self.base_url, self.retrying = base_url.rstrip("/"), retrying or Retrying()

    async def list_volume(self, session: aiohttp.ClientSession, year: int, venue: str = "ICML") -> Listing:
        if year not in ICML_VOLUMES:
            raise SourceError(f"PMLR: no ICML volume known for {year}; known years: {sorted(ICML_VOLUMES)}")
        volume = f"v{ICML_VOLUMES[year]}"
        resp = await request(session, "GET", f"{self.base_url}/{volume}/", retrying=self.retrying)
        return parse_volume_page(resp.body, volume, year, venue, self.base_url)

    async def details(self, session: aiohttp.ClientSession, url: str) -> dict:
        resp = await request(session, "GET", rebase(url, HOSTS, self.base_url), retrying=self.retrying)
        return parse_paper_page(resp.body, f"PMLR paper page {url}", self.base_url)
