"""`process-papers`: triage, judge and generate for papers already in the index — by id,
by title, or the most recent — the seed's pipeline_for_delivery.py as one flow. The scrape
flows run the same stages on what they found."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

from prefect import flow, get_client, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from blocks.index import PaperIndex
from blocks.paper import Paper, PaperStatus
from blocks.settings import Settings, cache_storage_slug, load_settings, paper_index
from tasks.codegen import PROMPT_VERSION as CODEGEN_PROMPT
from tasks.judge import PROMPT_VERSION as JUDGE_PROMPT
from tasks.llm import Usage, model_id
from tasks.stages import (
    LLM_LIMIT,
    apply_judgement,
    digest,
    generate_task,
    judge_task,
    next_version,
    prefilter_task,
    store_generation,
)

Stage = Literal["judge", "generate"]


class StageReport(BaseModel):
    prefiltered_out: int = Field(0, description="rejected locally: model calls saved")
    judged: int = 0
    rejected_by_judge: int = 0
    judge_failures: int = 0
    generated: int = 0
    generation_failed: int = 0
    cached_calls: int = Field(0, description="answers taken from the cache: no tokens spent")
    usage: Usage = Usage()
    paper_ids: list[str] = Field(default_factory=list)

    def take(self, future):
        """The task's outcome, its tokens counted unless the answer came from the cache."""
        outcome = future.result()
        if future.state.name == "Cached":
            self.cached_calls += 1
        else:
            self.usage = self.usage + outcome.usage
        return outcome

    def store_generations(self, futures, index: PaperIndex) -> None:
        for f in futures:
            paper = store_generation(index, self.take(f))
            self.generated += paper.status is PaperStatus.GENERATED
            self.generation_failed += paper.status is PaperStatus.GENERATION_FAILED


def select_papers(index: PaperIndex, paper_ids: list[str] | None, title: str | None,
                  recent_days: int | None, max_papers: int) -> list[Paper]:
    if paper_ids:
        return [index.require(i) for i in paper_ids]
    if title:
        return index.search(title, limit=max_papers)
    since = datetime.now(timezone.utc) - timedelta(days=recent_days or 1)
    return index.list_papers(since=since, limit=max_papers)


def ensure_llm_limit(s: Settings) -> None:
    """The global limit on concurrent model calls, across all runs."""
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(LLM_LIMIT, limit=s.llm_concurrency)


def run_stages(paper_ids: list[str], until: Stage = "generate", s: Settings | None = None,
               refresh: bool = False) -> StageReport:
    """Pre-filter and judge the scraped papers among `paper_ids`, then write code for the
    judged ones. Called inside a flow; tasks fan out on the flow's bounded task runner.
    `refresh` asks the model again instead of the cache, and retries failed generations."""
    s = s or load_settings()
    index, cache, model = paper_index(s), cache_storage_slug(s), model_id(s)
    report = StageReport(paper_ids=list(paper_ids))
    papers = [index.require(i) for i in paper_ids]

    fresh = [p.id for p in papers if p.status is PaperStatus.SCRAPED and "triage" not in p.extra]
    if fresh:
        report.prefiltered_out = sum(not d.keep for d in prefilter_task(fresh))
    to_judge = [p for p in map(index.require, paper_ids) if p.status is PaperStatus.SCRAPED]
    judge = judge_task.with_options(result_storage=cache, refresh_cache=refresh or None)
    futures = judge.map([p.id for p in to_judge], [digest(p.title, p.abstract, p.content_hash) for p in to_judge],
                        unmapped(JUDGE_PROMPT), unmapped(model))
    for f in futures:
        outcome = report.take(f)
        paper = apply_judgement(index, outcome)
        report.judge_failures += outcome.verdict is None
        report.judged += paper.status is PaperStatus.JUDGED
        report.rejected_by_judge += paper.status is PaperStatus.REJECTED
    if until == "judge":
        return report

    wanted = {PaperStatus.JUDGED} | ({PaperStatus.GENERATION_FAILED} if refresh else set())
    to_generate = [p for p in map(index.require, paper_ids) if p.status in wanted]
    generate = generate_task.with_options(result_storage=cache, refresh_cache=refresh or None)
    futures = generate.map([p.id for p in to_generate], [next_version(p) for p in to_generate],
                           [digest(p.title, p.abstract, p.content_hash, p.verdict.reason if p.verdict else "") for p in to_generate],
                           unmapped(CODEGEN_PROMPT), unmapped(model))
    report.store_generations(futures, index)
    return report


def repair(paper_ids: list[str], s: Settings | None = None) -> StageReport:
    """A new code version for each paper whose last run failed, from its error tail, while
    attempts remain (`ANNAPURNA_REPAIR_ATTEMPTS`)."""
    s = s or load_settings()
    index, cache, model = paper_index(s), cache_storage_slug(s), model_id(s)
    report = StageReport(paper_ids=list(paper_ids))
    failed = [p for p in map(index.require, paper_ids)
              if p.status is PaperStatus.EXECUTION_FAILED and p.code_versions and len(p.code_versions) <= s.repair_attempts]
    generate = generate_task.with_options(result_storage=cache)
    futures = generate.map(
        [p.id for p in failed], [next_version(p) for p in failed],
        [digest(p.title, p.content_hash) for p in failed], unmapped(CODEGEN_PROMPT), unmapped(model),
        # the failed program and its reason, not where its run was stored (a re-run stores anew)
        [digest(p.code_versions[-1].sha256, p.code_versions[-1].error) for p in failed],
    )
    report.store_generations(futures, index)
    return report


def publish_stage_report(report: StageReport, s: Settings, more: str = "") -> None:
    u = report.usage
    create_markdown_artifact(
        key="llm-cost",
        markdown=(
            f"# Triage, judge and generation\n"
            f"pre-filter rejected {report.prefiltered_out} (model calls saved), judged {report.judged}, "
            f"rejected by the judge {report.rejected_by_judge}, judge failures {report.judge_failures}, "
            f"generated {report.generated}, generation failed {report.generation_failed}\n\n"
            f"**cost**: {u.calls} model calls ({report.cached_calls} answered from the cache), "
            f"{u.input_tokens} input + {u.output_tokens} output tokens ({u.cached_tokens} cached), "
            f"${u.dollars:.4f} at ${s.llm_price_in_per_m}/${s.llm_price_out_per_m} per 1M tokens ({model_id(s)})"
            + more
        ),
        _sync=True,  # also called from a worker thread of an async flow
    )


@flow(name="process-papers", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
async def process_papers(paper_ids: list[str] | None = None, title: str | None = None,
                         recent_days: int | None = None, max_papers: int = 50,
                         until: Literal["judge", "generate", "execute"] = "generate",
                         execution_batch_size: int = 10, wait_for_execution: bool = True):
    """The chain for papers already indexed, chosen by id, by title search, or the most
    recent: triage, judge, generate, and (with until="execute") run them on Trainium."""
    from flows.chain import run_chain

    s = load_settings()
    papers = select_papers(paper_index(s), paper_ids, title, recent_days, max_papers)
    report = await run_chain([p.id for p in papers], until, execution_batch_size, wait_for_execution, s)
    get_run_logger().info("%s", report.stages.model_dump(exclude={"paper_ids"}))
    return report


@flow(name="repair-papers", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
def repair_papers(paper_ids: list[str]) -> StageReport:
    """A new code version for each failed run, from its error tail (bounded attempts)."""
    s = load_settings()
    ensure_llm_limit(s)
    report = repair(paper_ids, s)
    publish_stage_report(report, s)
    return report
