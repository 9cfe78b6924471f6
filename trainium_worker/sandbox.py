"""How much isolation this machine allows, and the command line that applies it.

Levels, strongest first:
- `bwrap` (bubblewrap): new PID, network, IPC and UTS namespaces, the root filesystem
  read-only with only the job's directory writable, credential files hidden, and the
  whole sandbox killed with its parent.
- `unshare`: new PID and network namespaces (with a user namespace when not root); the
  filesystem is not isolated.
- `process-group`: a new session; every process carrying the job's marker is killed at the
  end, and the worker is a child subreaper so double-forked processes stay its own. No
  network or filesystem isolation.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel

from trainium_worker.job import Isolation

# Files and folders in a home directory that hold credentials: hidden inside bwrap.
SECRET_PATHS = (".aws", ".ssh", ".config", ".prefect", ".netrc", ".docker", ".kube", ".git-credentials",
                ".pypirc", ".gnupg", ".azure", ".boto")


class IsolationReport(BaseModel):
    level: str
    pid_namespace: bool
    network_isolated: bool
    filesystem_read_only: bool
    note: str


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _unshare_prefix(allow_network: bool) -> list[str]:
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--pid", "--fork", "--kill-child", "--mount-proc", *([] if allow_network else ["--net"])]


@functools.cache
def detect(prefer: Isolation = "auto") -> str:
    """The strongest level that actually works here (each is tried with `true`)."""
    candidates = ["bwrap", "unshare", "process-group"] if prefer == "auto" else [prefer]
    for level in candidates:
        if level == "bwrap" and shutil.which("bwrap") and _works(bwrap_prefix(Path("/tmp"), False) + ["true"]):
            return level
        if level == "unshare" and shutil.which("unshare") and _works(_unshare_prefix(False) + ["true"]):
            return level
        if level == "process-group":
            return level
    raise RuntimeError(f"isolation {prefer!r} was asked for but does not work on this machine")


def report(level: str) -> IsolationReport:
    return IsolationReport(
        level=level,
        pid_namespace=level in ("bwrap", "unshare"),
        network_isolated=level in ("bwrap", "unshare"),
        filesystem_read_only=level == "bwrap",
        note={
            "bwrap": "PID, network, IPC, UTS namespaces; read-only root, job directory writable, credentials hidden",
            "unshare": "PID and network namespaces; filesystem not isolated",
            "process-group": "no namespaces available: process group + marker sweep; network and filesystem NOT isolated",
        }[level],
    )


RANK = {"process-group": 0, "unshare": 1, "bwrap": 2}


class IsolationTooWeak(RuntimeError):
    """The machine allows less isolation than the worker is configured to require."""


def check_floor(level: str, floor: str) -> None:
    """Refuse, in one line, to run programs below `floor`: never a silent downgrade."""
    if RANK[level] < RANK[floor]:
        raise IsolationTooWeak(
            f"isolation {level!r} is below ANNAPURNA_MIN_ISOLATION={floor}: refusing to run programs "
            f"({report(level).note}); let bubblewrap create user namespaces (deployments/trn1/apparmor-bwrap) "
            "or lower ANNAPURNA_MIN_ISOLATION"
        )


def bwrap_prefix(workdir: Path, allow_network: bool, extra_ro: list[Path] | None = None,
                 writable: list[Path] | None = None) -> list[str]:
    cmd = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not allow_network:
        cmd.append("--unshare-net")
    cmd += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for dev in sorted(Path("/dev").glob("neuron*")) + sorted(Path("/dev").glob("nvidia*")):
        cmd += ["--dev-bind", str(dev), str(dev)]
    for home in {Path.home(), Path("/root")}:
        for name in SECRET_PATHS:
            p = home / name
            if p.is_dir():
                cmd += ["--tmpfs", str(p)]
            elif p.exists():
                cmd += ["--ro-bind", "/dev/null", str(p)]
    for path in extra_ro or []:
        cmd += ["--ro-bind", str(path), str(path)]
    for path in writable or []:  # the Neuron compile cache, and nothing else beside the job
        cmd += ["--bind", str(path), str(path)]
    cmd += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
    return cmd + ["--"]


def _under_tmp(cmd: list[str], also: list[Path]) -> list[Path]:
    """The interpreter's environment and the worker's own files the program reads (the
    device probe), when they live under /tmp (which bwrap replaces with an empty tmpfs):
    they are bound back read-only."""
    exe = Path(cmd[0])
    roots = {exe.parent.parent, exe.resolve().parent.parent, *(p for p in also if p.exists())}
    return sorted(r for r in roots if r.parts[:2] == ("/", "tmp") and len(r.parts) > 2)


def wrap(cmd: list[str], level: str, workdir: Path, allow_network: bool, writable: list[Path] | None = None,
         readable: list[Path] | None = None) -> list[str]:
    if level == "bwrap":
        return bwrap_prefix(workdir, allow_network, _under_tmp(cmd, readable or []), writable) + cmd
    if level == "unshare":
        return _unshare_prefix(allow_network) + cmd
    return cmd


@functools.cache
def become_subreaper() -> bool:
    """Orphans of our jobs re-parent to us instead of init, so the marker sweep finds
    them under our tree (Linux only; harmless elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False
