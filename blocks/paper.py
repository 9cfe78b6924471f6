"""The domain model: a paper, its lifecycle, the judge's verdict, and its code versions.

It lives in `blocks` because the paper index blocks store it and `blocks` is the bottom
layer (flows -> tasks -> blocks). Execution results are kept in object storage as
`trainium_worker.ExecutionResult` JSON; a code version here carries only their key and a
summary, so this module needs nothing from the worker.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from blocks.errors import IllegalTransitionError

Source = Literal["arxiv", "openreview", "pmlr", "neurips", "mlsys"]
PAPER_ID = re.compile(r"^(arxiv|openreview|pmlr|neurips|mlsys):[A-Za-z0-9._/\-]+$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class PaperStatus(StrEnum):
    SCRAPED = "scraped"
    JUDGED = "judged"
    REJECTED = "rejected"
    GENERATED = "generated"
    GENERATION_FAILED = "generation_failed"
    QUEUED = "queued"
    EXECUTED = "executed"
    EXECUTION_FAILED = "execution_failed"


S = PaperStatus
#: Every allowed move. The main line is scraped -> judged -> generated -> queued ->
#: executed; the back edges are the repair loop (a failed run gets a new code version,
#: or is queued again as it is) and a retried generation.
TRANSITIONS: dict[PaperStatus, frozenset[PaperStatus]] = {
    S.SCRAPED: frozenset({S.JUDGED, S.REJECTED}),
    S.JUDGED: frozenset({S.GENERATED, S.GENERATION_FAILED}),
    S.REJECTED: frozenset(),
    S.GENERATED: frozenset({S.QUEUED}),
    S.GENERATION_FAILED: frozenset({S.GENERATED, S.GENERATION_FAILED}),
    S.QUEUED: frozenset({S.EXECUTED, S.EXECUTION_FAILED}),
    S.EXECUTED: frozenset(),
    S.EXECUTION_FAILED: frozenset({S.GENERATED, S.GENERATION_FAILED, S.QUEUED}),
}


class StatusChange(BaseModel):
    status: PaperStatus
    at: datetime = Field(default_factory=utcnow)
    reason: str | None = None


class Verdict(BaseModel):
    """The LLM judge's answer about one paper."""

    relevant: bool
    relevance: float = Field(ge=0, le=1)
    novelty: float = Field(ge=0, le=1)
    topics: list[str] = Field(default_factory=list)
    reason: str
    implementable: bool
    model: str = ""
    prompt_version: str = ""


class CodeArtifact(BaseModel):
    """One version of the program written for a paper, and how its run went."""

    paper_id: str
    version: int = Field(ge=1)
    code_key: str
    sha256: str
    model: str = ""
    prompt_version: str = ""
    lines_of_code: int = 0
    static_findings: list[str] = Field(default_factory=list)
    headline_metric: str | None = Field(None, description="from the plan: what method/ and baseline/ report")
    better: str | None = Field(None, description="lower or higher, from the plan")
    created_at: datetime = Field(default_factory=utcnow)
    result_key: str | None = None
    success: bool | None = None
    error: str | None = None
    metrics: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    training: str | None = Field(None, description="the run's verdict: trained, no_learning, diverged, failed")
    training_reason: str | None = None
    beats_baseline: bool | None = None
    ran_at: datetime | None = None
    preflight: dict | None = Field(None, description="the torch-xla CPU preflight's summary, or why it was skipped")

    @property
    def run_day(self) -> str:
        return (self.ran_at or self.created_at).date().isoformat()


class Paper(BaseModel):
    id: str
    source: Source
    venue: str
    year: int | None = None
    title: str
    authors: list[str] = Field(default_factory=list)
    abstract: str = ""
    url: str | None = None
    pdf_url: str | None = None
    pdf_key: str | None = None
    text_key: str | None = None
    content_hash: str | None = None
    page_count: int | None = None
    status: PaperStatus = PaperStatus.SCRAPED
    history: list[StatusChange] = Field(default_factory=list)
    verdict: Verdict | None = None
    code_versions: list[CodeArtifact] = Field(default_factory=list)
    error: str | None = Field(None, description="the last failure recorded on this paper")
    extra: dict = Field(default_factory=dict, description="source-specific fields")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @field_validator("id")
    @classmethod
    def _stable_id(cls, v: str) -> str:
        if not PAPER_ID.match(v):
            raise ValueError(
                f"paper id {v!r} is not a stable id like 'arxiv:2401.12345', "
                "'openreview:<forum>' or 'pmlr:v235/abe24a'"
            )
        return v

    @field_validator("title", mode="before")
    @classmethod
    def _has_title(cls, v: object, info) -> str:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"paper {info.data.get('id', '?')} has no title")
        return " ".join(v.split())

    @model_validator(mode="after")
    def _id_matches_source(self) -> "Paper":
        if self.id.split(":", 1)[0] != self.source:
            raise ValueError(f"paper id {self.id!r} does not belong to source {self.source!r}")
        if not self.history:
            self.history = [StatusChange(status=self.status, at=self.created_at)]
        return self

    def advance(self, status: PaperStatus | str, reason: str | None = None, **changes) -> "Paper":
        """A copy of this paper in `status`, the move checked and timestamped."""
        status = PaperStatus(status)
        allowed = TRANSITIONS[self.status]
        if status not in allowed:
            raise IllegalTransitionError(self.id, self.status, status, sorted(allowed))
        now = utcnow()
        return self.model_copy(
            update={
                **changes,
                "status": status,
                "history": [*self.history, StatusChange(status=status, at=now, reason=reason)],
                "updated_at": now,
            }
        )

    @property
    def storage_prefix(self) -> str:
        return storage_prefix(self.id)


def storage_prefix(paper_id: str) -> str:
    """`arxiv:2401.12345` -> `arxiv/2401.12345`: where a paper's objects live in each store."""
    source, rest = paper_id.split(":", 1)
    return f"{source}/{rest}"
