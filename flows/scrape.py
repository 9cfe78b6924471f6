"""What both scrape flows share: fan a selection out as batches, and report."""

from __future__ import annotations

import asyncio

from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from blocks.paper import Paper
from flows.chain import ChainReport
from tasks.scrape import ScrapeReport, batches, scrape_batch_task
from tasks.sources.venues import SourceName

class ScrapeAndChain(BaseModel):
    scrape: ScrapeReport
    chain: ChainReport


#: Batches in flight at once; each downloads `download_concurrency` PDFs at a time.
BATCHES_AT_ONCE = 2


async def scrape_in_batches(papers: list[Paper], batch_size: int, source: SourceName | None,
                            report: ScrapeReport) -> ScrapeReport:
    gate = asyncio.Semaphore(BATCHES_AT_ONCE)

    async def one(batch: list[Paper]) -> ScrapeReport:
        async with gate:
            return await scrape_batch_task(batch, source)

    for done in await asyncio.gather(*(one(b) for b in batches(papers, batch_size))):
        report = report.merge(done)
    return report


async def publish_report(title: str, report: ScrapeReport) -> None:
    lines = [
        f"# {title}",
        f"listed {report.listed}, selected {report.selected}, new {len(report.new)}, "
        f"already stored {report.known}, PDF failures {len(report.pdf_failures)}, problems {len(report.problems)}",
    ]
    if report.pdf_failures:
        lines += ["", "| paper | PDF failure |", "|---|---|"]
        lines += [f"| {pid} | {why.replace('|', '/')} |" for pid, why in report.pdf_failures.items()]
    if report.problems:
        lines += ["", "## Problems", *[f"- {p}" for p in report.problems[:50]]]
    await create_markdown_artifact(markdown="\n".join(lines), key="scrape-report", description=title)
