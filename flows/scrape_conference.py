"""`scrape-conference`: every paper of a venue and year, persisted (raw PDF + index
record "scraped"). `prefect deployment run scrape-conference/iclr` runs it."""

from __future__ import annotations

from collections import Counter

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.chain import ChainReport, Until, run_chain
from flows.scrape import ScrapeAndChain, publish_report, scrape_in_batches
from tasks.scrape import ScrapeReport, add_abstracts, list_venue, select
from tasks.sources.venues import canonical_venue, route


@flow(name="scrape-conference", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
async def scrape_conference(
    venue: str = "ICLR",
    year: int = 2025,
    search_term: str | None = None,
    max_papers: int | None = None,
    start_index: int = 0,
    end_index: int | None = None,
    batch_size: int = 25,
    source: str | None = None,
    track: str | None = None,
    until: Until = "execute",
    execution_batch_size: int = 10,
    wait_for_execution: bool = True,
) -> ScrapeAndChain:
    """List the venue, choose [start_index:end_index] matching `search_term` (at most
    `max_papers`), download and persist them in batches of `batch_size`; then, up to
    `until`, triage, judge, generate, and run the programs on Trainium in batches of
    `execution_batch_size` (waiting for them, and repairing failures, if asked). `track`
    lists one track only (e.g. "main", "Datasets_and_Benchmarks"); the default is all."""
    log = get_run_logger()
    venue = canonical_venue(venue)
    name = route(venue, year, source)
    listing = await list_venue(venue, year, name, track)
    tracks = dict(Counter(str(p.extra.get("track")) for p in listing.papers))
    log.info("%s %s via %s: %d papers listed %s, %d listing problems", venue, year, name,
             len(listing.papers), tracks, len(listing.problems))
    papers, problems = listing.papers, list(listing.problems)
    if search_term and name != "openreview":  # those listings carry no abstracts: fetch the slice's first
        papers, found = await add_abstracts(papers[start_index:end_index], name)
        problems += found
        start_index, end_index = 0, None
    chosen = select(papers, search_term, start_index, end_index, max_papers)
    report = ScrapeReport(listed=len(listing.papers), problems=problems)
    report = await scrape_in_batches(chosen, batch_size, name, report)
    log.info("selected %d: %d new, %d already stored, %d PDF failures", report.selected, len(report.new),
             report.known, len(report.pdf_failures))
    await publish_report(f"{venue} {year} scrape", report)
    chain = await run_chain(report.paper_ids, until, execution_batch_size, wait_for_execution)
    return ScrapeAndChain(scrape=report, chain=chain)
