"""The chain after scraping: triage, judge and generate the papers, then run their programs
on Trainium — batches dispatched to `execute-batch/trainium` as child flow runs — and feed
failed runs back to the generator while repair attempts remain."""

from __future__ import annotations

import asyncio
from typing import Literal

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import acreate_progress_artifact, acreate_table_artifact, aupdate_progress_artifact
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, Field

from blocks.paper import PaperStatus
from blocks.settings import Settings, filesystem, load_settings, paper_index
from flows.process_papers import StageReport, ensure_llm_limit, publish_stage_report, repair, run_stages
from tasks.execute import preflight_state, queue, record_preflight
from tasks.llm import Usage

Until = Literal["scrape", "judge", "generate", "execute"]
EXECUTE_DEPLOYMENT = "execute-batch/trainium"


class ChainReport(BaseModel):
    """What the chain did after scraping."""

    stages: StageReport = Field(default_factory=StageReport)
    batches: int = 0
    execution_seconds: float = 0.0
    execution: str = "not asked for"
    final: dict[str, str] = Field(default_factory=dict, description="paper id -> final status")


async def dispatch(paper_ids: list[str], batch_size: int, wait: bool, progress=None,
                   done_before: int = 0, total: int = 0) -> tuple[int, float]:
    """Queue the papers and run them as batches on the trainium pool; with `wait`, return
    once every batch has finished. Returns (batches, seconds the batches ran)."""
    index = paper_index()
    for pid in paper_ids:
        queue(index, pid)
    batches = [paper_ids[i : i + batch_size] for i in range(0, len(paper_ids), batch_size)]
    finished = 0

    async def one(batch: list[str]) -> float:
        nonlocal finished
        run = await run_deployment(EXECUTE_DEPLOYMENT, parameters={"paper_ids": batch},
                                   timeout=None if wait else 0, as_subflow=True, poll_interval=2)
        finished += 1
        if progress:
            await aupdate_progress_artifact(progress, 100 * (done_before + finished) / max(total, 1),
                                            description=f"{done_before + finished} of {total} batches done")
        return run.total_run_time.total_seconds() if wait and run.total_run_time else 0.0

    seconds = await asyncio.gather(*(one(b) for b in batches))
    return len(batches), sum(seconds)


@task(name="preflight", task_run_name="preflight {paper_id}", cache_policy=NO_CACHE, persist_result=False)
def preflight_task(paper_id: str) -> bool:
    """The paper's latest program under torch-xla on the CPU: True when it may use trn1 time."""
    s = load_settings()
    index = paper_index(s)
    return record_preflight(index, filesystem("results", s), index.require(paper_id), filesystem("code", s), s)


async def preflight_all(paper_ids: list[str]) -> list[str]:
    """One program at a time (each takes the machine's cores); those that passed."""
    return await asyncio.to_thread(lambda: [pid for pid in paper_ids if preflight_task(pid)])


async def run_chain(paper_ids: list[str], until: Until, batch_size: int, wait: bool,
                    s: Settings | None = None) -> ChainReport:
    s = s or load_settings()
    log = get_run_logger()
    report = ChainReport()
    if until == "scrape" or not paper_ids:
        return await _finish(report, paper_ids, s)
    ensure_llm_limit(s)
    report.stages = await asyncio.to_thread(run_stages, paper_ids, "judge" if until == "judge" else "generate", s)
    if until != "execute":
        return await _finish(report, paper_ids, s)
    index = paper_index(s)
    ready = [i for i in paper_ids if index.require(i).status is PaperStatus.GENERATED]
    if not ready:
        report.execution = "nothing to run"
        return await _finish(report, paper_ids, s)
    progress = await acreate_progress_artifact(0, key="execution-progress", description="batches on Trainium")
    total = -(-len(ready) // batch_size) * (1 + (s.repair_attempts if wait else 0))
    try:
        for attempt in range(1 + (s.repair_attempts if wait else 0)):
            passed = await preflight_all(ready)  # a program that fails goes to repair, not to the trn1
            if len(passed) < len(ready):
                log.info("preflight stopped %d of %d programs before the trn1", len(ready) - len(passed), len(ready))
            batches, seconds = (await dispatch(passed, batch_size, wait, progress, report.batches, total)
                                if passed else (0, 0.0))
            report.batches += batches
            report.execution_seconds += seconds
            if not wait:
                report.execution = f"dispatched {batches} batches; not waiting (repair-papers handles failures)"
                break
            failed = [i for i in ready if index.require(i).status is PaperStatus.EXECUTION_FAILED]
            if not failed or attempt == s.repair_attempts:
                break
            fixed = await asyncio.to_thread(repair, failed, s)
            report.stages.usage = report.stages.usage + fixed.usage
            report.stages.cached_calls += fixed.cached_calls
            report.stages.generated += fixed.generated
            ready = [i for i in failed if index.require(i).status is PaperStatus.GENERATED]
            log.info("repair attempt %d: %d of %d failed programs rewritten", attempt + 1, len(ready), len(failed))
            if not ready:
                break
        if wait:
            report.execution = f"{report.batches} batches ran"
    except ObjectNotFound:
        report.execution = (f"skipped: deployment {EXECUTE_DEPLOYMENT} not found; "
                            "run `python -m deployments.pools && prefect --no-prompt deploy --all`")
        log.warning(report.execution)
    await aupdate_progress_artifact(progress, 100, description=report.execution)
    return await _finish(report, paper_ids, s)


async def _finish(report: ChainReport, paper_ids: list[str], s: Settings) -> ChainReport:
    """The outcome table and the cost line, as artifacts on the run."""
    index = paper_index(s)
    rows = []
    for pid in paper_ids:
        p = index.require(pid)
        report.final[pid] = p.status.value
        code = p.code_versions[-1] if p.code_versions else None
        rows.append({
            "paper": pid, "title": p.title[:80], "status": p.status.value,
            "verdict": (f"{'relevant' if p.verdict.relevant else 'not relevant'} ({p.verdict.relevance:.2f})"
                        if p.verdict else (p.extra.get("triage") or {}).get("reason", "")),
            "code": f"v{code.version}" if code else "", "success": "" if not code or code.success is None else code.success,
            "trained": (code.training or "") if code else "",
            "preflight": preflight_state(code.preflight) if code else "",
            "beats baseline": "" if not code or code.beats_baseline is None else code.beats_baseline,
            "metrics": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in list((code.metrics if code else {}).items())[:3]),
            "error": p.error or "",
        })
    if rows:
        await acreate_table_artifact(table=rows, key="paper-outcomes", description=f"{len(rows)} papers and where they ended")
    u: Usage = report.stages.usage
    hours = report.execution_seconds / 3600
    await asyncio.to_thread(publish_stage_report, report.stages, s, (
        f"\n\n**trn1**: {hours:.3f} instance-hours of batches at ${s.trn1_price_per_hour}/h = "
        f"${hours * s.trn1_price_per_hour:.4f}; **total** ${u.dollars + hours * s.trn1_price_per_hour:.4f}"))
    return report
