"""NeurIPS and MLSys proceedings: the same site software serves both
(proceedings.neurips.cc, proceedings.mlsys.org). The year listing is `ul.paper-list > li`;
each abstract page carries `citation_*` meta tags and `p.paper-abstract`."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import aiohttp

from tasks.sources.html_pages import listing_entries, meta, parse_html, text_of
from tasks.sources.http import Retrying, SourceError, request
from tasks.sources.listing import Listing

SITES = {"neurips": ("NeurIPS", "https://proceedings.neurips.cc"), "mlsys": ("MLSys", "https://proceedings.mlsys.org")}
HASH = re.compile(r"/hash/([0-9a-f]{32})-Abstract(-[A-Za-z_]+)?\.html$")


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
        m = HASH.search(href)
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
            extra={"track": li.get("data-track") or li.get("class")},
        )
    return listing


def _abstract_text(para) -> str:
    """The site writes `<p class="paper-abstract"><p>text</p></p>`; HTML parsers close the
    outer <p> at the inner one, so the text lands in the paragraphs that follow it."""
    text = text_of(para)
    sibling = para.getnext()
    while not text and sibling is not None and sibling.tag == "p":
        text, sibling = text_of(sibling), sibling.getnext()
    return text


def parse_abstract_page(body: bytes | str, where: str = "abstract page") -> dict:
    doc = parse_html(body, where)
    title = meta(doc, "citation_title")
    paras = doc.cssselect("p.paper-abstract")
    if not title and not paras:
        raise SourceError(f"{where}: neither citation_title nor p.paper-abstract found")
    abstract = " ".join(filter(None, (_abstract_text(p) for p in paras)))
    abstract = abstract or next(iter(meta(doc, "citation_abstract")), "")
    return {
        "abstract": abstract,
        "authors": meta(doc, "citation_author"),
        "pdf_url": next(iter(meta(doc, "citation_pdf_url")), None),
        "title": title[0] if title else None,
    }


class ProceedingsSource:
    def __init__(self, site: str, base_url: str | None = None, retrying: Retrying | None = None):
        if site not in SITES:
            raise ValueError(f"unknown proceedings site {site!r}")
        self.site = site
        self.base_url = (base_url or SITES[site][1]).rstrip("/")
        self.retrying = retrying or Retrying()

    async def list_year(self, session: aiohttp.ClientSession, year: int) -> Listing:
        resp = await request(session, "GET", f"{self.base_url}/paper_files/paper/{year}", retrying=self.retrying)
        return parse_listing(resp.body, self.site, year, self.base_url)

    async def details(self, session: aiohttp.ClientSession, url: str) -> dict:
        resp = await request(session, "GET", url, retrying=self.retrying)
        return parse_abstract_page(resp.body, f"{SITES[self.site][0]} abstract page {url}")
