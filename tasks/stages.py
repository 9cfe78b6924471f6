"""Triage, judging and generation applied to the index and storage, and their Prefect
tasks. The model calls are cached across runs on (paper, its text, prompt version, model
id), with results persisted to the configured storage: a re-run costs nothing."""

from __future__ import annotations

import hashlib
import json

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from prefect.concurrency.sync import concurrency
from prefect.tasks import exponential_backoff

from blocks.index import PaperIndex
from blocks.paper import CodeArtifact, Paper, PaperStatus
from blocks.settings import filesystem, load_settings, paper_index
from tasks.codegen import PROMPT_VERSION as CODEGEN_PROMPT
from tasks.codegen import advisories
from tasks.codegen import ERROR_TAIL_CHARS, GenerationOutcome, generate_program
from tasks.judge import JudgeOutcome, judge_paper
from tasks.llm import Usage, chat_model, retry_condition
from tasks.storage import code_key, put_once, read_object
from tasks.triage import TriageDecision, prefilter
from trainium_worker.analysis import lines_of_code

LLM_LIMIT = "llm-calls"
LLM_RETRIES = dict(retries=4, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
                   retry_condition_fn=retry_condition)


def excerpt(paper: Paper, chars: int = 8000) -> str:
    if not paper.text_key:
        return ""
    data = read_object(filesystem("raw"), paper.text_key)
    return data.decode("utf-8", errors="replace")[:chars] if data else ""


def digest(*parts: str | None) -> str:
    return hashlib.sha256("\x00".join(p or "" for p in parts).encode()).hexdigest()[:16]


def next_version(paper: Paper) -> int:
    """The next code version: after every stored version and every failed attempt."""
    return max([v.version for v in paper.code_versions] + [paper.extra.get("generation_attempts", 0)]) + 1


def with_usage(paper: Paper, outcome: GenerationOutcome) -> dict:
    """The paper's generation tokens and dollars so far, this version's added."""
    return (Usage(**paper.extra.get("generation_usage", {})) + outcome.usage).model_dump()


# -- applying outcomes to the index ---------------------------------------------------------
def apply_triage(index: PaperIndex, decision: TriageDecision) -> Paper:
    def change(p: Paper) -> Paper:
        extra = {**p.extra, "triage": decision.model_dump(exclude={"paper_id"})}
        if decision.keep:
            return p.model_copy(update={"extra": extra})
        return p.advance(PaperStatus.REJECTED, decision.reason, extra=extra)

    return index.update(decision.paper_id, change)


def apply_judgement(index: PaperIndex, outcome: JudgeOutcome) -> Paper:
    def change(p: Paper) -> Paper:
        extra = {**p.extra, "judge_usage": outcome.usage.model_dump()}
        if outcome.verdict is None:  # stays scraped, with the reason, for a later retry
            return p.model_copy(update={"error": outcome.error, "extra": extra})
        v = outcome.verdict
        keep = v.relevant and v.implementable
        why = v.reason if keep else f"judge: {'not relevant' if not v.relevant else 'not implementable'}: {v.reason}"
        return p.advance(PaperStatus.JUDGED if keep else PaperStatus.REJECTED, why, verdict=v, extra=extra, error=None)

    return index.update(outcome.paper_id, change)


def store_generation(index: PaperIndex, outcome: GenerationOutcome) -> Paper:
    """Program, plan and metadata to the code store as version N; the paper to generated
    (or generation_failed, with the findings)."""
    code_fs = filesystem("code")
    meta = {"model": outcome.model, "usage": outcome.usage.model_dump(), "findings": outcome.findings,
            "error": outcome.error, "dataset": outcome.program.dataset if outcome.program else None}
    put_once(code_fs, code_key(outcome.paper_id, outcome.version, "generation.json"), json.dumps(meta, indent=2).encode())
    if outcome.program is None:
        return index.update(outcome.paper_id, lambda p: p.advance(
            PaperStatus.GENERATION_FAILED, outcome.error, error=outcome.error,
            extra={**p.extra, "generation_usage": with_usage(p, outcome), "generation_attempts": outcome.version}))
    key = code_key(outcome.paper_id, outcome.version)
    sha = put_once(code_fs, key, outcome.program.code.encode())
    put_once(code_fs, code_key(outcome.paper_id, outcome.version, "plan.md"), outcome.program.plan.encode())
    artifact = CodeArtifact(
        paper_id=outcome.paper_id, version=outcome.version, code_key=key, sha256=sha, model=outcome.model,
        prompt_version=CODEGEN_PROMPT,
        lines_of_code=lines_of_code(outcome.program.code), static_findings=advisories(outcome.program.code),
        headline_metric=outcome.program.headline_metric, better=outcome.program.better,
    )

    def change(p: Paper) -> Paper:
        versions = [v for v in p.code_versions if v.version != outcome.version] + [artifact]
        extra = {**p.extra, "dataset": outcome.program.dataset, "generation_usage": with_usage(p, outcome),
                 "generation_attempts": outcome.version}
        return p.advance(PaperStatus.GENERATED, f"code v{outcome.version}", code_versions=versions, extra=extra, error=None)

    return index.update(outcome.paper_id, change)


# -- Prefect tasks ---------------------------------------------------------------------------
@task(name="prefilter", cache_policy=NO_CACHE, persist_result=False)
def prefilter_task(paper_ids: list[str]) -> list[TriageDecision]:
    s = load_settings()
    index = paper_index(s)
    papers = [index.require(i) for i in paper_ids]
    indexed = index.list_papers(limit=5000)
    decisions = prefilter(papers, indexed, s.interests, s.interest_keywords.split(","), s.prefilter_threshold,
                          s.duplicate_threshold)
    for d in decisions:
        apply_triage(index, d)
    return decisions


@task(name="judge", cache_policy=INPUTS + TASK_SOURCE, persist_result=True, **LLM_RETRIES)
def judge_task(paper_id: str, content: str, prompt_version: str, model: str) -> JudgeOutcome:
    """`content` (a digest of what the judge reads), `prompt_version` and `model` are in
    the cache key: the same paper, prompt and model never cost a second call."""
    s = load_settings()
    paper = paper_index(s).require(paper_id)
    with concurrency(LLM_LIMIT, occupy=1, strict=False):
        return judge_paper(paper, excerpt(paper), s, chat_model(s))


@task(name="generate", cache_policy=INPUTS + TASK_SOURCE, persist_result=True, **LLM_RETRIES)
def generate_task(paper_id: str, version: int, content: str, prompt_version: str, model: str,
                  failure: str | None = None) -> GenerationOutcome:
    """A program from the paper, or, with `failure` (a digest of the failed version and its
    reason, part of the cache key), a repair of the latest version from its error tail."""
    s = load_settings()
    index = paper_index(s)
    paper = index.require(paper_id)
    previous = error_tail = None
    if failure and paper.code_versions:  # a repair of the latest version
        prior = paper.code_versions[-1]
        previous = (read_object(filesystem("code", s), prior.code_key) or b"").decode()
        error_tail = failure_tail(prior.result_key)
    with concurrency(LLM_LIMIT, occupy=1, strict=False):
        return generate_program(paper, paper.verdict, excerpt(paper), s, chat_model(s), version, previous, error_tail)


def failure_tail(result_key: str | None) -> str:
    """The last characters of a failed run's stderr (and its one-line reason)."""
    if not result_key:
        return ""
    data = read_object(filesystem("results"), result_key)
    if not data:
        return ""
    result = json.loads(data)
    return (result.get("stderr") or "")[-ERROR_TAIL_CHARS:] + f"\n[{result.get('error')}]"
