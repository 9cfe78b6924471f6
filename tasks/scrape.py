"""The scraping stage, Prefect-free: list a venue, choose papers, and for each batch
download and persist what is new. The flows wrap these as tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
from prefect.filesystems import WritableFileSystem
from pydantic import BaseModel, Field

from blocks.index import PaperIndex
from blocks.paper import Paper
from tasks.persist import persist_scraped
from tasks.sources.http import DownloadError, SourceError, download_pdf
from tasks.sources.listing import Listing
from tasks.sources.pmlr import PMLRSource
from tasks.sources.proceedings import ProceedingsSource

DetailsSource = PMLRSource | ProceedingsSource


class ScrapeReport(BaseModel):
    """What one scrape (or one batch of it) did."""

    listed: int = 0
    selected: int = 0
    new: list[str] = Field(default_factory=list, description="ids indexed for the first time")
    known: int = Field(0, description="already indexed with their PDF: not downloaded again")
    pdf_failures: dict[str, str] = Field(default_factory=dict, description="paper id -> reason")
    problems: list[str] = Field(default_factory=list)
    paper_ids: list[str] = Field(default_factory=list, description="every selected paper, in order")

    def merge(self, other: "ScrapeReport") -> "ScrapeReport":
        return ScrapeReport(
            listed=self.listed + other.listed, selected=self.selected + other.selected,
            new=self.new + other.new, known=self.known + other.known,
            pdf_failures={**self.pdf_failures, **other.pdf_failures},
            problems=self.problems + other.problems, paper_ids=self.paper_ids + other.paper_ids,
        )


def matches(paper: Paper, search_term: str | None) -> bool:
    """Every word of the term appears in the title or abstract (case-insensitive)."""
    if not search_term:
        return True
    text = f"{paper.title} {paper.abstract}".lower()
    return all(word in text for word in search_term.lower().split())


def select(papers: Sequence[Paper], search_term: str | None = None, start_index: int = 0,
           end_index: int | None = None, max_papers: int | None = None) -> list[Paper]:
    """The listing's [start_index:end_index] slice, filtered by the term, at most max_papers."""
    chosen = [p for p in papers[start_index:end_index] if matches(p, search_term)]
    return chosen[:max_papers] if max_papers else chosen


def batches(papers: Sequence[Paper], batch_size: int) -> list[list[Paper]]:
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return [list(papers[i : i + batch_size]) for i in range(0, len(papers), batch_size)]


async def add_details(session: aiohttp.ClientSession, source: DetailsSource, papers: list[Paper],
                      concurrency: int, problems: list[str]) -> list[Paper]:
    """Abstracts (and better author lists and PDF links) from each paper's own page, for
    sources whose listing lacks them. A page that fails leaves its paper as listed."""
    gate = asyncio.Semaphore(concurrency)

    async def one(p: Paper) -> Paper:
        if p.abstract or not p.url:
            return p
        async with gate:
            try:
                d = await source.details(session, p.url)
            except SourceError as e:
                problems.append(str(e))
                return p
        track = d.get("track")
        return p.model_copy(update={
            "abstract": d["abstract"] or p.abstract,
            "authors": d["authors"] or p.authors,
            "pdf_url": d["pdf_url"] or p.pdf_url,
            "extra": {**p.extra, "track": track} if track and p.extra.get("track") in (None, "main") else p.extra,
        })

    return list(await asyncio.gather(*(one(p) for p in papers)))


async def scrape_batch(session: aiohttp.ClientSession, papers: list[Paper], raw: WritableFileSystem,
                       index: PaperIndex, *, max_pdf_bytes: int = 50 * 2**20, concurrency: int = 4,
                       details: DetailsSource | None = None) -> ScrapeReport:
    """Download and persist each paper not yet indexed with its PDF. A paper indexed
    earlier whose PDF failed gets its download tried again; nothing is indexed twice."""
    report = ScrapeReport(selected=len(papers), paper_ids=[p.id for p in papers])
    existing = {p.id: await asyncio.to_thread(index.get, p.id) for p in papers}
    todo = [p for p in papers if existing[p.id] is None or (existing[p.id].pdf_key is None and p.pdf_url)]
    report.known = len(papers) - len(todo)
    if details:
        todo = await add_details(session, details, todo, concurrency, report.problems)
    gate = asyncio.Semaphore(concurrency)

    async def one(p: Paper) -> None:
        pdf, failure = None, None
        if p.pdf_url:
            async with gate:
                try:
                    pdf = await download_pdf(session, p.pdf_url, max_bytes=max_pdf_bytes)
                except DownloadError as e:
                    failure = f"download: {e}"
        else:
            failure = "no PDF link in the listing"
        stored = await asyncio.to_thread(persist_scraped, p, pdf, raw, index, failure)
        if existing[p.id] is None:
            report.new.append(p.id)
        if stored.error and stored.pdf_key is None:
            report.pdf_failures[p.id] = stored.error

    await asyncio.gather(*(one(p) for p in todo))
    return report


# -- Prefect tasks -------------------------------------------------------------------------
# Scraping is idempotent through the index (stable ids, write-once storage), so these
# tasks retry freely and are not cached: a re-run must see what is new since.
from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from blocks.settings import filesystem, load_settings, paper_index  # noqa: E402
from tasks.sources.http import new_session, retry_unless_permanent  # noqa: E402
from tasks.sources.venues import SourceName, openreview_source, proceedings_source  # noqa: E402


@task(name="list-venue", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_unless_permanent,
      cache_policy=NO_CACHE, persist_result=False)
async def list_venue(venue: str, year: int, source: SourceName, track: str | None = None) -> Listing:
    """Every paper the source lists for the venue and year, in every track or in `track`
    (no PDFs yet)."""
    s = load_settings()
    async with new_session() as session:
        if source == "openreview":
            return await openreview_source(s).list_venue(session, venue, year, track)
        src = proceedings_source(source, s)
        if isinstance(src, PMLRSource):
            return await src.list_volume(session, year, venue)
        return await src.list_year(session, year, track)


@task(name="add-abstracts", retries=1, cache_policy=NO_CACHE, persist_result=False)
async def add_abstracts(papers: list[Paper], source: SourceName) -> tuple[list[Paper], list[str]]:
    s = load_settings()
    problems: list[str] = []
    async with new_session() as session:
        detailed = await add_details(session, proceedings_source(source, s), papers, s.download_concurrency, problems)
    return detailed, problems


@task(name="scrape-batch", retries=2, retry_delay_seconds=[10, 60], cache_policy=NO_CACHE, persist_result=False)
async def scrape_batch_task(papers: list[Paper], source: SourceName | None = None) -> ScrapeReport:
    """Download, store and index one batch; safe to retry (nothing is stored twice)."""
    s = load_settings()
    details = proceedings_source(source, s) if source in ("pmlr", "neurips", "mlsys") else None
    async with new_session(connections=s.download_concurrency) as session:
        return await scrape_batch(session, papers, filesystem("raw", s), paper_index(s),
                                  max_pdf_bytes=s.max_pdf_mb * 2**20, concurrency=s.download_concurrency,
                                  details=details)
