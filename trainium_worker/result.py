"""The record of one program run. It crosses the boundary between the worker and the
rest of Annapurna as JSON, so it is a pydantic model with no dependency on either side."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, Field


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ExecutionResult(BaseModel):
    """What one run of a generated program did.

    The first block of fields is the seed executor's response, kept so old results still
    load; the rest says why a run failed and where it ran.
    """

    paper_id: str
    code_version: int = 1
    success: bool
    return_code: int | None = None
    execution_time: float = Field(0.0, ge=0, description="wall-clock seconds")
    timeout: bool = False
    stdout: str = ""
    stderr: str = ""
    lines_of_code: int = 0
    has_training_loop: bool = False
    peak_memory_mb: float = 0.0
    metrics: dict[str, float | int | str | bool | None] = Field(default_factory=dict)

    error: str | None = Field(None, description="one-line reason when success is False")
    device: str = "cpu"
    neuron_cores: list[int] = Field(default_factory=list)
    metrics_series: list[dict] = Field(default_factory=list)
    stdout_bytes: int = Field(0, description="bytes the program wrote, kept or not")
    stderr_bytes: int = 0
    isolation: str = ""
    notes: list[str] = Field(default_factory=list, description="malformed METRICS lines, truncation")
    verdict: str = Field("failed", description="trained, no_learning, diverged or failed: the worker's own reading "
                                               "of the loss series, loop and device, never the program's word")
    verdict_reason: str = ""
    headline_metric: str | None = None
    beats_baseline: bool | None = Field(None, description="method beat baseline on the headline metric; None: not reported")
    xla: dict | None = Field(None, description="what XLA did: compilations, executions, mark_steps, transfers, "
                                               "fallbacks (from the device probe)")
    stopped: str | None = Field(None, description="why the preflight watchdog stopped the program early")
    ran_on: str | None = Field(None, description="what the program computed on, as the device probe saw it: "
                                                 "neuron, cuda, cpu, xla:<kind>; None when it did not report")
    started_at: datetime = Field(default_factory=_now)
