"""`scrape-arxiv`: new arXiv papers in the team's categories since the last successful
run. Every API request takes a slot of the global rate limit `arxiv-api` (one request
per 3 seconds across all runs, enforced by Prefect's slot decay)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from prefect import flow, get_client, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.concurrency.asyncio import rate_limit

from blocks.settings import load_settings
from prefect.task_runners import ThreadPoolTaskRunner

from flows.chain import Until, run_chain
from flows.scrape import ScrapeAndChain, publish_report, scrape_in_batches
from tasks.scrape import ScrapeReport
from tasks.sources.arxiv import DEFAULT_CATEGORIES, ArxivSource, WalkEnded, build_query, validate_categories
from tasks.sources.http import PermanentSourceError, SourceError, new_session, retry_unless_permanent
from tasks.sources.listing import Listing

ARXIV_LIMIT = "arxiv-api"
SECONDS_BETWEEN_REQUESTS = 3.0


async def ensure_arxiv_rate_limit() -> None:
    """One slot, decaying in 3 s: at most one arXiv request every 3 seconds, everywhere."""
    async with get_client() as client:
        await client.upsert_global_concurrency_limit_by_name(
            ARXIV_LIMIT, limit=1, slot_decay_per_second=1 / SECONDS_BETWEEN_REQUESTS
        )


#: A run whose listing ended early carries this tag: its window was not fully read, so the
#: next run does not start from it.
INCOMPLETE_TAG = "arxiv-incomplete"


async def last_successful_start() -> datetime | None:
    """When the last completed scrape-arxiv run that read its whole window started (not
    counting this one)."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["scrape-arxiv"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
                id=FlowRunFilterId(not_any_=[runtime.flow_run.id]) if runtime.flow_run.id else None,
            ),
            sort=FlowRunSort.START_TIME_DESC, limit=20,
        )
    return next((r.start_time for r in runs if INCOMPLETE_TAG not in r.tags), None)


async def mark_incomplete() -> None:
    if runtime.flow_run.id:
        async with get_client() as client:
            run = await client.read_flow_run(runtime.flow_run.id)
            await client.update_flow_run(run.id, tags=sorted({*run.tags, INCOMPLETE_TAG}))


@task(name="list-arxiv", retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_unless_permanent,
      cache_policy=NO_CACHE, persist_result=False)
async def list_arxiv(query: str, max_papers: int, page_size: int = 200) -> Listing:
    s = load_settings()

    async def throttle() -> None:
        await rate_limit(ARXIV_LIMIT, strict=True)

    source = ArxivSource(s.arxiv_url, page_size=min(max_papers, page_size), throttle=throttle)
    listing, log = Listing(), get_run_logger()
    async with new_session(connections=1) as session:
        async for page in source.pages(session, query, max_papers):
            if isinstance(page, SourceError):
                log.warning("%s", page)
                if isinstance(page, PermanentSourceError) or isinstance(page, WalkEnded) and not listing.papers:
                    raise page  # nothing listed: a failed run says why, and Prefect retries it
                listing.complete = listing.complete and not isinstance(page, WalkEnded)
                listing.problems.append(str(page))
            else:
                listing.extend(page)
                listing.total = page.total
    listing.papers = listing.papers[:max_papers]
    return listing


@flow(name="scrape-arxiv", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
async def scrape_arxiv(
    categories: list[str] = list(DEFAULT_CATEGORIES),
    search_term: str | None = None,
    since: datetime | None = None,
    max_papers: int = 500,
    batch_size: int = 25,
    page_size: int = 200,
    until: Until = "execute",
    execution_batch_size: int = 10,
    wait_for_execution: bool = True,
) -> ScrapeAndChain:
    """Papers submitted since `since` (default: the start of the last successful run,
    or a day ago), newest first, at most `max_papers`."""
    log = get_run_logger()
    categories = validate_categories(categories)
    since = since or await last_successful_start() or datetime.now(timezone.utc) - timedelta(days=1)
    await ensure_arxiv_rate_limit()
    query = build_query(categories, search_term, since=since)
    listing = await list_arxiv(query, max_papers, page_size)
    log.info("arXiv since %s: %d papers listed (of %s), %d problems", since.isoformat(), len(listing.papers),
             listing.total, len(listing.problems))
    if not listing.complete:
        log.warning("the arXiv listing ended early; the next run reads this window again")
        await mark_incomplete()
    report = ScrapeReport(listed=len(listing.papers), problems=listing.problems)
    report = await scrape_in_batches(listing.papers, batch_size, None, report)
    await publish_report(f"arXiv since {since:%Y-%m-%d %H:%M}", report)
    chain = await run_chain(report.paper_ids, until, execution_batch_size, wait_for_execution)
    return ScrapeAndChain(scrape=report, chain=chain)
