"""`retry-failed`: the dead-letter replay of the seed pipelines. Failed papers go through
their stage again — judge failures are asked again (not answered from the cache), failed
generations are regenerated, failed runs are queued for execution again."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from blocks.paper import Paper, PaperStatus
from blocks.settings import load_settings, paper_index
from flows.chain import dispatch
from flows.process_papers import ensure_llm_limit, run_stages

RetryStage = Literal["judge", "generate", "execute"]


def failed_papers(stage: RetryStage | None, since: datetime | None) -> dict[RetryStage, list[Paper]]:
    """What each stage would retry: judge failures (scraped, with an error), failed
    generations, failed runs."""
    index = paper_index()
    wanted: dict[RetryStage, list[Paper]] = {
        "judge": [p for p in index.list_papers(status=PaperStatus.SCRAPED, since=since, limit=10000)
                  if (p.error or "").startswith("judge")],
        "generate": index.list_papers(status=PaperStatus.GENERATION_FAILED, since=since, limit=10000),
        "execute": index.list_papers(status=PaperStatus.EXECUTION_FAILED, since=since, limit=10000),
    }
    return {k: v for k, v in wanted.items() if stage in (None, k)}


class RetryReport(BaseModel):
    retried: dict[str, list[str]]
    final: dict[str, str]


@flow(name="retry-failed", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
async def retry_failed(stage: RetryStage | None = None, since: datetime | None = None,
                       execution_batch_size: int = 10) -> RetryReport:
    s = load_settings()
    todo = failed_papers(stage, since)
    ids = {k: [p.id for p in v] for k, v in todo.items()}
    if ids.get("judge") or ids.get("generate"):
        ensure_llm_limit(s)
        await asyncio.to_thread(run_stages, ids.get("judge", []) + ids.get("generate", []), "generate", s, True)
    if ids.get("execute"):
        await dispatch(ids["execute"], execution_batch_size, wait=True)
    index = paper_index(s)
    return RetryReport(retried=ids, final={i: index.require(i).status.value for v in ids.values() for i in v})
