"""Preflight: run a program once under torch-xla on the CPU (`PJRT_DEVICE=CPU`) before it
may spend trn1 time. What makes neuronx-cc compile for minutes per graph shows up here in
seconds: data-dependent shapes (many graphs), no mark_step (one giant graph), `.item()`
every step (device-to-host transfers), CPU fallbacks, and programs that never touch XLA.
`PT_XLA_DEBUG_LEVEL=1` names the program lines that triggered each execution."""

from __future__ import annotations

import re
from collections import Counter

from pydantic import BaseModel, Field

from trainium_worker.devices import Device
from trainium_worker.job import Job, Limits, WorkerConfig
from trainium_worker.result import ExecutionResult
from trainium_worker.runner import Runner

FRAME = re.compile(r"\(([^()\s]*program\.py):(\d+)\)")
EXIT_STOPPED = 86


class PreflightLimits(BaseModel):
    timeout_s: float = Field(180, gt=0, description="the whole preflight run")
    max_compilations: int = Field(30, ge=1, description="graphs compiled before the watchdog stops the program")
    first_sync_s: float = Field(45, gt=0, description="XLA work with no mark_step for this long stops the program")
    max_transfers_per_step: float = Field(2.0, ge=0, description="device-to-host transfers per mark_step")
    max_fallback_ops: int = Field(0, ge=0, description="ops that fell back to the CPU")


class PreflightReport(BaseModel):
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    compilations: int = 0
    compile_time_s: float = 0.0
    executions: int = 0
    mark_steps: int = 0
    transfers: int = 0
    transfers_per_step: float = 0.0
    fallbacks: dict[str, int] = Field(default_factory=dict)
    lines: list[str] = Field(default_factory=list, description="program lines that triggered executions, most first")
    wall_time_s: float = 0.0
    ran_on: str | None = None

    def text(self) -> str:
        """The report as the repair prompt and the logs read it."""
        head = "preflight passed" if self.passed else "preflight failed: " + "; ".join(self.reasons)
        return "\n".join([
            head,
            f"graphs compiled {self.compilations} ({self.compile_time_s:.1f} s), executions {self.executions}, "
            f"mark_steps {self.mark_steps}, device-to-host transfers {self.transfers} "
            f"({self.transfers_per_step:.1f} per step), CPU fallbacks {self.fallbacks or 'none'}, "
            f"wall {self.wall_time_s:.1f} s, ran on {self.ran_on}",
            *(["lines that triggered executions:", *self.lines] if self.lines else []),
        ])


def triggering_lines(text: str, limit: int = 10) -> list[str]:
    found = Counter(f"program.py:{m.group(2)}" for m in FRAME.finditer(text))
    return [f"{line} ({n} executions)" for line, n in found.most_common(limit)]


def assess(result: ExecutionResult, limits: PreflightLimits) -> PreflightReport:
    xla = result.xla or {}
    steps = max(int(xla.get("mark_steps", 0)), 1)
    report = PreflightReport(
        passed=False, compilations=int(xla.get("compilations", 0)), compile_time_s=float(xla.get("compile_time_s", 0)),
        executions=int(xla.get("executions", 0)), mark_steps=int(xla.get("mark_steps", 0)),
        transfers=int(xla.get("transfers", 0)), transfers_per_step=round(int(xla.get("transfers", 0)) / steps, 2),
        fallbacks=dict(xla.get("fallbacks") or {}), lines=triggering_lines(result.stderr + "\n" + result.stdout),
        wall_time_s=result.execution_time, ran_on=result.ran_on,
    )
    reasons = []
    if result.stopped:
        reasons.append(f"stopped early: {result.stopped}")
    elif result.error:
        reasons.append(f"the program failed: {result.error}")
    if not (result.ran_on or "").startswith("xla") and not result.stopped:
        if xla.get("xla_tensors") and not report.executions:
            reasons.append("built XLA tensors but never executed a graph: no mark_step (one giant graph)")
        else:
            reasons.append(f"never computed on the XLA device (ran on {result.ran_on or 'unknown'})")
    if report.compilations > limits.max_compilations and not result.stopped:
        reasons.append(f"{report.compilations} graphs compiled (limit {limits.max_compilations}): data-dependent shapes?")
    if report.transfers_per_step > limits.max_transfers_per_step and not result.stopped:
        reasons.append(f"{report.transfers_per_step:.1f} device-to-host transfers per step (limit "
                       f"{limits.max_transfers_per_step:g}): .item() or printing tensors inside the loop?")
    if sum(report.fallbacks.values()) > limits.max_fallback_ops and not (result.stopped and "fell back" in result.stopped):
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(report.fallbacks.items(), key=lambda kv: -kv[1]))
        reasons.append(f"ops fell back to the CPU: {ops}")
    if report.executions and not report.mark_steps and not result.stopped:
        reasons.append("no mark_step: every execution was forced by reading a tensor")
    report.reasons, report.passed = reasons, not reasons
    return report


async def preflight(code: str, python: str, config: WorkerConfig, limits: PreflightLimits | None = None,
                    paper_id: str = "preflight", version: int = 1) -> tuple[PreflightReport, ExecutionResult]:
    """Run `code` once in the sandbox with the preflight interpreter on the XLA CPU device."""
    limits = limits or PreflightLimits()
    cpu = Device(kind="cpu", index=0)
    cfg = config.model_copy(update={"python": python})
    job = Job(paper_id=paper_id, code=code, version=version, limits=Limits(timeout_s=limits.timeout_s),
              env={"PJRT_DEVICE": "CPU", "PT_XLA_DEBUG_LEVEL": "1", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
                   "ANNAPURNA_PREFLIGHT_MAX_COMPILES": str(limits.max_compilations),
                   "ANNAPURNA_PREFLIGHT_FIRST_SYNC_S": str(limits.first_sync_s),
                   "ANNAPURNA_PREFLIGHT_MAX_TRANSFERS_PER_STEP": str(limits.max_transfers_per_step),
                   "ANNAPURNA_PREFLIGHT_MAX_FALLBACKS": str(limits.max_fallback_ops)})
    result, _files = await Runner([cpu], cfg).run(job, cpu)
    report = assess(result, limits)
    result.device = "xla:cpu (preflight)"
    if not report.passed:
        result.success, result.verdict = False, "failed"
        result.error = result.verdict_reason = "preflight: " + "; ".join(report.reasons)
        result.stderr = result.stderr[-8000:] + "\n\n" + report.text()  # last: the repair prompt reads the tail
    return report, result
