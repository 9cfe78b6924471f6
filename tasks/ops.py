"""What an operator asks day to day, read from the index, storage and the Prefect API:
the status board, one paper in full, and the report. Plain functions; the CLI prints them."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from blocks.paper import Paper, PaperStatus
from blocks.settings import Settings, filesystem, load_settings, paper_index
from tasks.llm import Usage
from tasks.storage import read_object

FAILED = (PaperStatus.GENERATION_FAILED, PaperStatus.EXECUTION_FAILED)


def paper_usage(p: Paper) -> Usage:
    return Usage(**p.extra.get("judge_usage", {})) + Usage(**p.extra.get("generation_usage", {}))


class Status(BaseModel):
    papers: dict[str, int]
    waiting_runs: dict[str, dict] = Field(default_factory=dict, description="pool -> count and oldest wait (s)")
    instance: str = "not configured (ANNAPURNA_TRN1_INSTANCE_ID)"
    failures: list[dict] = Field(default_factory=list)
    last_day: Usage = Usage()
    runs_last_day: dict[str, int] = Field(default_factory=dict, description="verdicts of the last day's runs")


async def waiting_runs() -> dict[str, dict]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Scheduled", "Late", "Pending"]))))
    now, pools = datetime.now(timezone.utc), {}
    for r in runs:
        if r.expected_start_time and r.expected_start_time > now:
            continue  # scheduled for later: not waiting yet
        pool = pools.setdefault(r.work_pool_name or "(none)", {"count": 0, "oldest_wait_s": 0.0})
        pool["count"] += 1
        if r.expected_start_time:
            pool["oldest_wait_s"] = max(pool["oldest_wait_s"], (now - r.expected_start_time).total_seconds())
    return pools


def status(s: Settings | None = None, with_prefect: bool = True) -> Status:
    import asyncio

    s = s or load_settings()
    index = paper_index(s)
    board = Status(papers={k.value: v for k, v in index.counts().items()})
    if with_prefect:
        try:
            board.waiting_runs = asyncio.run(waiting_runs())
        except Exception as e:  # noqa: BLE001 - the board shows what it can
            board.waiting_runs = {"error": {"reason": f"Prefect API unreachable ({type(e).__name__})"}}
    if s.trn1_instance_id:
        from tasks.instance import instance_action

        try:
            board.instance = instance_action(s, "status").state
        except Exception as e:  # noqa: BLE001
            board.instance = f"unknown: {e}"
    since = datetime.now(timezone.utc) - timedelta(days=1)
    recent = index.list_papers(since=since, limit=10000)
    board.failures = [{"paper": p.id, "status": p.status.value, "reason": p.error or (p.history[-1].reason or ""),
                       "at": p.updated_at.isoformat()}
                      for p in recent if p.status in FAILED or (p.error and p.status is PaperStatus.SCRAPED)][:10]
    for p in recent:
        board.last_day = board.last_day + paper_usage(p)
    board.runs_last_day = dict(Counter(v.training for p in recent for v in p.code_versions if v.training))
    return board


def show(paper_id: str, s: Settings | None = None) -> dict:
    """Every field of a paper, with each code version's execution result."""
    s = s or load_settings()
    paper = paper_index(s).require(paper_id)
    results_fs = filesystem("results", s)
    doc = json.loads(paper.model_dump_json())
    for version in doc["code_versions"]:
        if version.get("result_key"):
            data = read_object(results_fs, version["result_key"])
            if data:
                result = json.loads(data)
                result["stdout"] = result["stdout"][-2000:]
                result["stderr"] = result["stderr"][-2000:]
                version["result"] = result
    return doc


def download(paper_id: str, target: Path, code: bool, results: bool, pdf: bool, s: Settings | None = None) -> list[Path]:
    """Copy a paper's objects out of storage into `target`; returns the files written."""
    s = s or load_settings()
    paper = paper_index(s).require(paper_id)
    written: list[Path] = []
    pairs: list[tuple[str, str, str]] = []  # store, key, local name
    if pdf:
        pairs += [("raw", k, Path(k).name) for k in (paper.pdf_key, paper.text_key) if k]
    for v in paper.code_versions:
        if code:
            pairs += [("code", v.code_key.replace("program.py", n), f"v{v.version}/{n}")
                      for n in ("program.py", "plan.md", "generation.json")]
        if results and v.result_key:
            run = v.result_key.rsplit("/", 1)[0]
            pairs += [("results", f"{run}/{n}", f"v{v.version}/{n}") for n in ("result.json", "stdout.txt", "stderr.txt")]
    stores = {}
    for store, key, name in pairs:
        fs = stores.setdefault(store, filesystem(store, s))
        data = read_object(fs, key)
        if data is None:
            continue
        path = target / paper.storage_prefix.replace("/", "_") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written


class Report(BaseModel):
    since: str
    papers: int
    by_status: dict[str, int]
    per_day: dict[str, int]
    judged_rate: float | None
    generated_rate: float | None
    execution_success_rate: float | None = Field(description="runs that ran to completion (exit 0, on its device)")
    trained_rate: float | None = Field(None, description="runs whose verdict is trained")
    beats_baseline_rate: float | None = Field(None, description="of runs that reported method and baseline")
    by_day: dict[str, dict] = Field(default_factory=dict, description="runs, trained and beats-baseline rates per day")
    by_venue: dict[str, dict] = Field(default_factory=dict, description="the same per venue")
    usage: Usage
    dollars_per_100_papers: float | None


def verdict_rates(runs: list) -> dict:
    """Of runs: how many trained (the worker's verdict, not exit 0), and of those that
    reported method and baseline, how many beat it."""
    compared = [v.beats_baseline for _, v in runs if v.beats_baseline is not None]
    return {"runs": len(runs),
            "trained_rate": (sum(v.training == "trained" for _, v in runs) / len(runs)) if runs else None,
            "beats_baseline_rate": (sum(compared) / len(compared)) if compared else None}


def grouped(runs: list, key) -> dict[str, dict]:
    groups: dict[str, list] = {}
    for p, v in runs:
        groups.setdefault(key(p, v), []).append((p, v))
    return {k: verdict_rates(g) for k, g in sorted(groups.items())}


def report(since: datetime, s: Settings | None = None) -> Report:
    s = s or load_settings()
    papers = paper_index(s).list_papers(since=since, limit=100000)
    statuses = Counter(p.status.value for p in papers)
    reached = lambda st: sum(1 for p in papers if any(h.status == st for h in p.history))  # noqa: E731
    judged_any = sum(1 for p in papers if p.verdict is not None)  # answered by the judge
    runs = [(p, v) for p in papers for v in p.code_versions if v.success is not None]
    executed, succeeded = len(runs), sum(1 for _, v in runs if v.success)
    overall = verdict_rates(runs)
    usage = Usage()
    for p in papers:
        usage = usage + paper_usage(p)
    return Report(
        since=since.isoformat(), papers=len(papers), by_status=dict(statuses),
        per_day=dict(sorted(Counter(p.created_at.date().isoformat() for p in papers).items())),
        judged_rate=(sum(1 for p in papers if p.verdict and p.verdict.relevant and p.verdict.implementable)
                     / judged_any) if judged_any else None,
        generated_rate=(reached("generated") / reached("judged")) if reached("judged") else None,
        execution_success_rate=(succeeded / executed) if executed else None,
        trained_rate=overall["trained_rate"], beats_baseline_rate=overall["beats_baseline_rate"],
        by_day=grouped(runs, lambda p, v: v.run_day),
        by_venue=grouped(runs, lambda p, v: f"{p.venue} {p.year or ''}".strip()),
        usage=usage, dollars_per_100_papers=(usage.dollars / len(papers) * 100) if papers else None,
    )


def report_markdown(r: Report) -> str:
    pct = lambda x: "-" if x is None else f"{x:.0%}"  # noqa: E731
    lines = [f"# Annapurna report since {r.since[:16]}", "", f"{r.papers} papers", "",
             "| stage | rate |", "|---|---|", f"| relevant and implementable (of papers the judge answered) | {pct(r.judged_rate)} |",
             f"| code generated (of relevant) | {pct(r.generated_rate)} |",
             f"| runs that ran to completion (of runs) | {pct(r.execution_success_rate)} |",
             f"| runs that trained: the loss fell, on its device (of runs) | {pct(r.trained_rate)} |",
             f"| method beat its baseline (of runs that reported both) | {pct(r.beats_baseline_rate)} |", "",
             "| day or venue | runs | trained | beats baseline |", "|---|---|---|---|",
             *[f"| {k} | {g['runs']} | {pct(g['trained_rate'])} | {pct(g['beats_baseline_rate'])} |"
               for k, g in [*r.by_day.items(), *r.by_venue.items()]], "",
             "| status | papers |", "|---|---|", *[f"| {k} | {v} |" for k, v in sorted(r.by_status.items())], "",
             f"model calls {r.usage.calls}, tokens {r.usage.input_tokens} in / {r.usage.output_tokens} out, "
             f"${r.usage.dollars:.4f}" + (f" (${r.dollars_per_100_papers:.3f} per 100 papers)" if r.dollars_per_100_papers is not None else "")]
    return "\n".join(lines) + "\n"
