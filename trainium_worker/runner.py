"""Running untrusted programs: one job per device slot, each in its sandbox, with a
wall-clock limit, a memory cap over its whole process tree, capped output, and nothing
left running afterwards. One job's crash, timeout or kill never touches another."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from trainium_worker.analysis import has_training_loop, lines_of_code
from trainium_worker.devices import Device, compile_cache_dir, device_env
from trainium_worker.job import Job, WorkerConfig
from trainium_worker.output import MetricsScanner, Tail
from trainium_worker.result import ExecutionResult
from trainium_worker.sandbox import become_subreaper, check_floor, detect, wrap
from trainium_worker.verdict import judge

MARKER_VAR = "ANNAPURNA_JOB_MARKER"
POLL_S = 0.1  # memory and clock checks; the kernel OOM killer is the backstop between them
SAFE_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")  # besides PATH and the runtime's own variables
#: The runtime's variables (the `trainium` pool's job variables among them) reach programs.
PASS_PREFIXES = ("NEURON_", "XLA_", "PJRT_", "MALLOC_")
#: ... and these never do, whatever a prefix or the explicit list says.
NEVER = re.compile(r"^(AWS_|PREFECT_API_)|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|ACCESS_KEY|PRIVATE_KEY|SESSION",
                   re.I)
PROBE_DIR = Path(__file__).resolve().parent / "probe"
PROBE_FILE = ".annapurna-probe.json"


def program_path(config: WorkerConfig) -> str:
    """The interpreter's bin (its console scripts, e.g. neuronx-cc in the worker's venv),
    the configured tool directories (/opt/aws/neuron/bin), then the worker's own PATH."""
    worker = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)
    first = [str(Path(config.python).parent), *config.tool_paths]
    return os.pathsep.join(dict.fromkeys(first + worker))


def passed_env(config: WorkerConfig) -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if (k.startswith(PASS_PREFIXES) or k in config.pass_env) and not NEVER.search(k)}


def base_env(workdir: Path, config: WorkerConfig, marker: str) -> dict[str, str]:
    """An environment from an allow-list: no AWS_*, no Prefect API key or URL, no tokens."""
    env = {k: os.environ[k] for k in SAFE_ENV if k in os.environ}
    env["PATH"] = program_path(config)
    env.update(passed_env(config))
    env.update({
        "HOME": str(workdir), "TMPDIR": str(workdir / "tmp"), "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1", "ANNAPURNA_OUTPUT_DIR": str(workdir / "outputs"),
        MARKER_VAR: marker, "PYTHONPATH": str(PROBE_DIR), "ANNAPURNA_PROBE_FILE": str(workdir / PROBE_FILE),
    })
    if config.data_dir:
        env["ANNAPURNA_DATA_DIR"] = str(config.data_dir)
    return env


def default_memory_mb(slots: int) -> int:
    return int(psutil.virtual_memory().total / 2**20 / max(1, slots))


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return kids


def _tree_pids(pid: int) -> list[int]:
    """pid and all its descendants, read from /proc/<pid>/task/*/children: a few file
    reads, where psutil's children() scans every process on the machine."""
    if not os.path.exists("/proc/self/task"):
        try:
            root = psutil.Process(pid)
            return [pid, *(c.pid for c in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []
    found, i = [pid], 0
    while i < len(found):
        found += _children(found[i])
        i += 1
    return found


def _tree(pid: int) -> list[psutil.Process]:
    procs = []
    for p in _tree_pids(pid):
        try:
            procs.append(psutil.Process(p))
        except psutil.NoSuchProcess:
            pass
    return procs


def _tree_rss_mb(pid: int) -> float:
    total = 0
    for p in _tree_pids(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
    return total / 2**20


def _marked(marker: str) -> list[psutil.Process]:
    """Processes of ours that carry the job's marker, wherever they re-parented to."""
    found = []
    for p in psutil.process_iter(["uids"]):
        try:
            if p.info["uids"] and p.info["uids"].real == os.getuid() and p.environ().get(MARKER_VAR) == marker:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


async def _pump(stream: asyncio.StreamReader, tail: Tail, scanner: MetricsScanner | None) -> None:
    while chunk := await stream.read(1 << 16):
        tail.add(chunk)
        if scanner:
            scanner.feed(chunk)
    if scanner:
        scanner.close()


def _collect_files(workdir: Path, cap: int) -> dict[str, bytes]:
    """Files the program left in outputs/ and profile/, up to `cap` bytes in all."""
    kept, used = {}, 0
    for folder in ("outputs", "profile"):
        for path in sorted((workdir / folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                size = path.stat().st_size
                if used + size <= cap:
                    kept[str(path.relative_to(workdir))] = path.read_bytes()
                    used += size
    return kept


class Runner:
    """Runs jobs on the given devices, one job per device at a time."""

    def __init__(self, devices: list[Device], config: WorkerConfig | None = None):
        self.config = config or WorkerConfig()
        self.devices = devices
        self.isolation = detect(self.config.isolation)
        self.min_isolation = self.config.min_isolation or (
            "bwrap" if any(d.kind == "neuron" for d in devices) else "process-group")
        check_floor(self.isolation, self.min_isolation)
        if self.isolation == "process-group":
            become_subreaper()

    async def run_batch(self, jobs: list[Job]) -> list[tuple[ExecutionResult, dict[str, bytes]]]:
        free: asyncio.Queue[Device] = asyncio.Queue()
        for d in self.devices:
            free.put_nowait(d)

        async def one(job: Job):
            device = await free.get()
            try:
                return await self.run(job, device)
            finally:
                free.put_nowait(device)

        return list(await asyncio.gather(*(one(j) for j in jobs)))

    async def run(self, job: Job, device: Device) -> tuple[ExecutionResult, dict[str, bytes]]:
        """Run one program; return its result and the files it left in outputs/ and profile/."""
        cfg, limits = self.config, job.limits
        cfg.work_root.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", job.paper_id)[:60]
        workdir = Path(tempfile.mkdtemp(prefix=f"{safe}-v{job.version}-", dir=cfg.work_root))
        for sub in ("outputs", "profile", "tmp"):
            (workdir / sub).mkdir()
        (workdir / "program.py").write_text(job.code)
        marker = uuid.uuid4().hex
        env = base_env(workdir, cfg, marker) | device_env(device, job, cfg, str(workdir))
        env |= {k: v for k, v in job.env.items() if not NEVER.search(k)}
        env["ANNAPURNA_DEVICE"] = device.label
        writable = []
        if device.kind == "neuron":  # libneuronxla takes a lock file in the cache for every compile
            cache = Path(compile_cache_dir(cfg))
            cache.mkdir(parents=True, exist_ok=True)
            writable.append(cache)
        cmd = wrap([cfg.python, "-u", str(workdir / "program.py")], self.isolation, workdir, job.allow_network,
                   writable, [PROBE_DIR, *map(Path, cfg.tool_paths)])
        memory_cap = limits.memory_mb or default_memory_mb(len(self.devices))
        out, err, scanner = Tail(limits.output_bytes), Tail(limits.output_bytes), MetricsScanner()
        reason: str | None = None
        peak = 0.0
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        pumps = [asyncio.create_task(_pump(proc.stdout, out, scanner)), asyncio.create_task(_pump(proc.stderr, err, None))]
        waiter = asyncio.create_task(proc.wait())  # done only once its pipes close, too
        try:
            while proc.returncode is None:  # set as soon as the program itself exits
                rss = _tree_rss_mb(proc.pid)
                peak = max(peak, rss)
                if rss > memory_cap:
                    reason = f"memory limit ({rss:.0f} MB > {memory_cap} MB)"
                    break
                if time.monotonic() - started > limits.timeout_s:
                    reason = f"timeout after {limits.timeout_s:g} s"
                    break
                await asyncio.wait({waiter}, timeout=POLL_S)
            elapsed = time.monotonic() - started
            if reason:
                await self._stop(proc, waiter, marker, gentle=reason.startswith("timeout"), grace=limits.grace_s)
        finally:
            await self._sweep(proc, marker)  # whatever it left behind dies with it
            await asyncio.wait([waiter, *pumps], timeout=5)
            for task in (waiter, *pumps):
                task.cancel()
        rc = proc.returncode
        files = _collect_files(workdir, cfg.keep_files_bytes)
        probe = _read_probe(workdir / PROBE_FILE)
        shutil.rmtree(workdir, ignore_errors=True)
        return self._result(job, device, rc, elapsed, reason, peak, out, err, scanner, probe), files

    async def _stop(self, proc, waiter: asyncio.Task, marker: str, gentle: bool, grace: float) -> None:
        """TERM to every process of the job, a grace period, then KILL."""
        if gentle and grace:
            _signal_all(_tree(proc.pid)[1:] or _tree(proc.pid), signal.SIGTERM)
            deadline = time.monotonic() + grace
            while proc.returncode is None and time.monotonic() < deadline:
                await asyncio.wait({waiter}, timeout=POLL_S)
        await self._sweep(proc, marker)

    async def _sweep(self, proc, marker: str) -> None:
        """KILL whatever of the job is still alive: its tree, its process group, and (for
        the process-group level) anything carrying its marker."""
        victims = _tree(proc.pid)
        if self.isolation == "process-group":
            victims += _marked(marker)
        _signal_all(victims, signal.SIGKILL)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in victims:
            try:
                p.wait(timeout=2)
            except (psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
                pass

    def _result(self, job, device, rc, elapsed, reason, peak, out, err, scanner, probe) -> ExecutionResult:
        signalled = -rc if rc is not None and rc < 0 else (rc - 128 if self.isolation == "bwrap" and rc and rc > 128 else None)
        if reason is None and rc != 0:
            reason = f"killed by signal {signalled}" if signalled else f"nonzero exit {rc}"
        ran_on = probe.get("ran_on") if probe else None
        if reason is None:
            reason = device_mismatch(device, ran_on)
        notes = list(scanner.notes) + ([f"device probe: {probe['probe_error']}"] if probe and "probe_error" in probe else [])
        loop = has_training_loop(job.code)
        decided = judge(reason is None, reason, loop, scanner.series, scanner.merged, self.config.verdict_rules,
                        job.headline_metric, job.better)
        if out.total > out.cap:
            notes.append(f"stdout truncated: kept the last {out.cap} of {out.total} bytes")
        if err.total > err.cap:
            notes.append(f"stderr truncated: kept the last {err.cap} of {err.total} bytes")
        return ExecutionResult(
            paper_id=job.paper_id, code_version=job.version, success=reason is None,
            return_code=rc, execution_time=round(elapsed, 3), timeout=bool(reason and reason.startswith("timeout")),
            stdout=out.text(), stderr=err.text(), lines_of_code=lines_of_code(job.code),
            has_training_loop=loop, peak_memory_mb=round(peak, 1), verdict=decided.verdict,
            verdict_reason=decided.reason, headline_metric=decided.headline_metric, beats_baseline=decided.beats_baseline,
            metrics=scanner.merged, metrics_series=scanner.series, error=reason, device=device.label,
            neuron_cores=[device.index] if device.kind == "neuron" else [],
            stdout_bytes=out.total, stderr_bytes=err.total, isolation=self.isolation, notes=notes, ran_on=ran_on,
            xla=(probe or {}).get("xla") or None, stopped=(probe or {}).get("stopped"),
        )


SLOT_NAMES = {"neuron": "the NeuronCore", "cuda": "the GPU"}


def device_mismatch(device: Device, ran_on: str | None) -> str | None:
    """Why a run that exited 0 did not do what its slot is for: computing on the slot's
    accelerator. A CPU slot takes any program."""
    if device.kind == "cpu":
        return None
    if ran_on is None:
        return f"could not tell what it ran on: the device probe did not report (exit without atexit?), on {device.label}"
    if ran_on != device.kind:
        return f"ran on {ran_on.upper() if ran_on == 'cpu' else ran_on}, not on {SLOT_NAMES[device.kind]}"
    return None


def _read_probe(path: Path) -> dict | None:
    """What the probe recorded; bounded, and None when it is missing or not JSON."""
    try:
        with path.open("rb") as f:
            data = json.loads(f.read(65536))
        return data if isinstance(data, dict) and isinstance(data.get("ran_on"), str) else None
    except (OSError, ValueError):
        return None
