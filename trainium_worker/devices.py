"""Finding what a job can run on: NeuronCores, else CUDA GPUs, else CPU slots; and the
environment that pins a job to its device."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from typing import Literal

from pydantic import BaseModel

from trainium_worker.job import Job, WorkerConfig

NEURON_CORES_PER_DEVICE = 2  # trn1: 2 NeuronCore-v2 per Neuron device


class Device(BaseModel):
    kind: Literal["neuron", "cuda", "cpu"]
    index: int

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.index}"


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def neuron_core_count(neuron_ls_json: str | None = None, dev_glob: str = "/dev/neuron*") -> int:
    """NeuronCores on this host: from `neuron-ls --json-output` when it runs, else by
    counting /dev/neuron* devices."""
    text = neuron_ls_json if neuron_ls_json is not None else (
        _run(["neuron-ls", "--json-output"]) if shutil.which("neuron-ls") else None
    )
    if text:
        try:
            return sum(int(d.get("nc_count", 0)) for d in json.loads(text))
        except (ValueError, TypeError, AttributeError):
            pass
    return len(glob.glob(dev_glob)) * NEURON_CORES_PER_DEVICE


def cuda_device_count() -> int:
    text = _run(["nvidia-smi", "-L"]) if shutil.which("nvidia-smi") else None
    return sum(1 for line in (text or "").splitlines() if line.startswith("GPU "))


def discover(config: WorkerConfig) -> list[Device]:
    """One device per slot: every NeuronCore, else every GPU, else `cpu_slots` CPU slots."""
    if cores := neuron_core_count():
        return [Device(kind="neuron", index=i) for i in range(cores)]
    if gpus := cuda_device_count():
        return [Device(kind="cuda", index=i) for i in range(gpus)]
    return [Device(kind="cpu", index=i) for i in range(config.cpu_slots)]


def compile_cache_dir(config: WorkerConfig) -> str:
    return os.path.expanduser(config.compile_cache)


def device_env(device: Device, job: Job, config: WorkerConfig, workdir: str) -> dict[str, str]:
    """Variables that pin the job to its device and configure its runtime."""
    if device.kind == "neuron":
        env = {"NEURON_RT_VISIBLE_CORES": str(device.index), "PJRT_DEVICE": "NEURON"}
        # always the local directory: the sandbox has no network and no credentials for S3
        flags = [f"--cache_dir={compile_cache_dir(config)}"]
        if job.retry_compilation:  # the compiler caches failures too: after a failed or killed run, compile again
            flags.append("--retry_failed_compilation")
        env["NEURON_CC_FLAGS"] = " ".join(flags)
        if job.profile:
            env["NEURON_RT_INSPECT_ENABLE"] = "1"
            env["NEURON_RT_INSPECT_OUTPUT_DIR"] = os.path.join(workdir, "profile")
        return env
    if device.kind == "cuda":
        return {"CUDA_VISIBLE_DEVICES": str(device.index)}
    threads = str(config.cpu_threads or max(1, (os.cpu_count() or 1) // config.cpu_slots))
    return {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
            "ANNAPURNA_CPU_THREADS": threads}
