"""What the seed's `/health` said, and what a trn1 operator needs to know before the first
batch: devices, versions of the Neuron stack in the program interpreter, isolation against
its floor, whether the compile cache is writable from inside the sandbox, free disk."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from trainium_worker.devices import Device, compile_cache_dir
from trainium_worker.job import WorkerConfig
from trainium_worker.sandbox import RANK, detect, wrap

PACKAGES = ("torch", "torch-neuronx", "torch-xla", "neuronx-cc", "libneuronxla")
MIN_FREE_GB = 2.0  # a job directory, outputs and a compile cache entry need this much


class Health(BaseModel):
    status: str = Field(description="ok or unhealthy")
    reasons: list[str] = Field(default_factory=list, description="why unhealthy, one line each")
    neuron_available: bool
    cores: list[str] = Field(description="one slot per device: neuron:0, neuron:1 / cuda:N / cpu:N")
    working_dir: str
    max_execution_time: float
    python: str
    versions: dict[str, str | None]
    isolation: str
    min_isolation: str
    meets_min_isolation: bool
    compile_cache: str
    compile_cache_writable_in_sandbox: bool | None = Field(None, description="checked for Neuron workers only")
    disk_free_gb: float
    pool: dict | None = Field(None, description="the Prefect work pool served (trainium): status and workers "
                                                "online, as the server reports them; filled in by the CLI")


def package_versions(python: str) -> dict[str, str | None]:
    """Versions as the program interpreter sees them (it may not be the worker's own)."""
    code = ("import json, importlib.metadata as m\nout = {}\nfor n in %r:\n    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: out[n] = None\nprint(json.dumps(out))") % (PACKAGES,)
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return dict.fromkeys(PACKAGES)


def cache_writable_in_sandbox(config: WorkerConfig, level: str) -> bool:
    """A sandboxed interpreter creates and removes a lock file in the compile cache, as
    libneuronxla does for every compile."""
    cache = Path(compile_cache_dir(config))
    cache.mkdir(parents=True, exist_ok=True)
    lock = cache / ".annapurna-health.lock"
    code = f"import os; open({str(lock)!r}, 'w').close(); os.remove({str(lock)!r})"
    with tempfile.TemporaryDirectory(dir=config.work_root) as workdir:
        cmd = wrap([config.python, "-c", code], level, Path(workdir), False, writable=[cache])
        try:
            return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


def check(devices: list[Device], config: WorkerConfig, max_execution_time: float) -> Health:
    config.work_root.mkdir(parents=True, exist_ok=True)
    level = detect(config.isolation)
    neuron = any(d.kind == "neuron" for d in devices)
    floor = config.min_isolation or ("bwrap" if neuron else "process-group")
    versions = package_versions(config.python)
    writable = cache_writable_in_sandbox(config, level) if neuron else None
    free = shutil.disk_usage(config.work_root).free / 2**30
    reasons = []
    if RANK[level] < RANK[floor]:
        reasons.append(f"isolation {level!r} is below ANNAPURNA_MIN_ISOLATION={floor}")
    if not versions.get("torch"):
        reasons.append(f"{config.python} cannot import torch")
    if neuron and not (versions.get("torch-neuronx") and versions.get("torch-xla")):
        reasons.append("NeuronCores present but torch-neuronx / torch-xla are not installed in the program interpreter")
    if writable is False:
        reasons.append(f"the compile cache {compile_cache_dir(config)} is not writable inside the sandbox")
    if free < MIN_FREE_GB:
        reasons.append(f"{free:.1f} GiB free in {config.work_root}, under {MIN_FREE_GB} GiB")
    return Health(
        status="unhealthy" if reasons else "ok", reasons=reasons, neuron_available=neuron,
        cores=[d.label for d in devices], working_dir=str(config.work_root), max_execution_time=max_execution_time,
        python=config.python, versions=versions, isolation=level, min_isolation=floor,
        meets_min_isolation=RANK[level] >= RANK[floor], compile_cache=compile_cache_dir(config),
        compile_cache_writable_in_sandbox=writable, disk_free_gb=round(free, 1),
    )
