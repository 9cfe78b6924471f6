"""What the worker is asked to run, and how it is configured. Built by the flow from
Annapurna's settings; the worker itself reads no configuration of its own."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from trainium_worker.verdict import VerdictRules

Isolation = Literal["auto", "bwrap", "unshare", "process-group"]
IsolationLevel = Literal["bwrap", "unshare", "process-group"]


class Limits(BaseModel):
    timeout_s: float = Field(600, gt=0, description="wall clock, then TERM, grace, KILL")
    grace_s: float = Field(5, ge=0, description="between TERM and KILL")
    memory_mb: int | None = Field(None, gt=0, description="resident memory of the whole tree; None: host RAM / slots")
    output_bytes: int = Field(4 * 2**20, gt=0, description="kept of stdout and of stderr each (the tail)")


class Job(BaseModel):
    paper_id: str
    code: str
    version: int = 1
    attempt: int = Field(1, ge=1, description="which code version's attempt this is")
    retry_compilation: bool = Field(False, description="an earlier run of this paper failed or was killed: "
                                    "the Neuron compiler must not answer from its cache of failed compilations")
    headline_metric: str | None = Field(None, description="the paper's headline metric, from the plan: "
                                        "the program reports method/<it> and baseline/<it>")
    better: Literal["lower", "higher"] | None = Field(None, description="which way the headline metric improves")
    allow_network: bool = False
    env: dict[str, str] = Field(default_factory=dict, description="more variables for this job (preflight's); "
                                "credential-like names are dropped")
    profile: bool = False
    limits: Limits = Field(default_factory=Limits)


class WorkerConfig(BaseModel):
    python: str = Field(default_factory=lambda: sys.executable, description="interpreter that runs programs")
    work_root: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "annapurna-jobs")
    cpu_slots: int = Field(1, ge=1, description="jobs at once when there is no accelerator")
    cpu_threads: int | None = Field(None, ge=1, description="threads per CPU job; default cores / slots")
    compile_cache: str = Field("~/.cache/annapurna/neuron-compile-cache",
                               description="local directory, writable inside the sandbox for Neuron jobs (an s3:// "
                                           "cache is synced to it by the caller, outside the sandbox)")
    tool_paths: list[str] = Field(default_factory=lambda: ["/opt/aws/neuron/bin"],
                                  description="put on programs' PATH after the interpreter's bin (neuronx-cc, neuron-ls)")
    pass_env: list[str] = Field(default_factory=list, description="worker variables passed to programs besides "
                                "NEURON_*, XLA_*, PJRT_*, MALLOC_* (never credentials)")
    min_isolation: IsolationLevel | None = Field(None, description="refuse to run programs below this level; "
                                                 "None: bwrap with NeuronCores, process-group otherwise")
    data_dir: Path | None = Field(None, description="staged datasets, exposed read-only as ANNAPURNA_DATA_DIR")
    isolation: Isolation = "auto"
    verdict_rules: VerdictRules = Field(default_factory=VerdictRules)
    keep_files_bytes: int = Field(16 * 2**20, description="files a program leaves in outputs/ and profile/, kept up to this")
