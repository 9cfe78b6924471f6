"""`make demo`: the main job, offline, on embedded defaults.

It starts a local Prefect server (SQLite), registers the blocks, creates the work pools,
deploys everything in prefect.yaml, starts a worker for `default` and one for `trainium`
(CPU here), serves the demo corpus on localhost in the formats of the real sites, runs
`scrape-conference/iclr` through to execution with the replay model, prints what became of
every paper and the UI address, and keeps the server up for browsing until Ctrl-C (or
`make demo-stop`). Every run starts clean: it deletes ./.demo first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deployments.demo_corpus import DEMO_PAPERS, demo_server
from deployments.replay import BackgroundReplay

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FINAL = {"rejected", "executed", "execution_failed", "generation_failed"}
DEMO_USER, DEMO_PASSWORD = "annapurna@example.org", "demo-password"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """The processes of the local stack; stopped together, whatever happens."""

    def __init__(self, base: Path, env: dict[str, str]):
        self.base, self.env, self.procs = base, env, []

    def start(self, name: str, *cmd: str) -> subprocess.Popen:
        log = open(self.base / f"{name}.log", "w")
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        (self.base / "pids").write_text("\n".join(str(p.pid) for p in self.procs))
        return proc

    def run(self, *cmd: str) -> str:
        out = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def stop(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        (self.base / "pids").unlink(missing_ok=True)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the Prefect server at {url} did not come up; see .demo/server.log")


def run_demo(base: Path, keep_running: bool = True, console: Console | None = None) -> dict:
    """Run the whole demo under `base`; return the flow run's final state and each paper's."""
    console = console or Console()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = demo_server()
    with BackgroundReplay(server) as corpus_url:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ANNAPURNA_", "PREFECT_"))},
            "PREFECT_HOME": str(base / "prefect"), "PREFECT_API_URL": api, "PREFECT_UI_URL": f"http://127.0.0.1:{port}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5", "ANNAPURNA_HOME": str(base / "home"),
            "ANNAPURNA_OPENREVIEW_URL": f"{corpus_url}/or2", "ANNAPURNA_OPENREVIEW_V1_URL": f"{corpus_url}/or1",
            "ANNAPURNA_OPENREVIEW_WEB_URL": corpus_url, "ANNAPURNA_OPENREVIEW_USERNAME": DEMO_USER,
            "ANNAPURNA_OPENREVIEW_PASSWORD": DEMO_PASSWORD, "ANNAPURNA_CPU_SLOTS": "2",
        }
        preflight_python = REPO / ".preflight-venv" / "bin" / "python"  # `make preflight-env`
        if preflight_python.exists():
            env["ANNAPURNA_PREFLIGHT_PYTHON"] = str(preflight_python)
        else:
            console.print("no .preflight-venv: the preflight stage is skipped (recorded on each code version)")
        stack = Stack(base, env)
        try:
            with console.status("starting the Prefect server (SQLite) ..."):
                stack.start("server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port))
                wait_healthy(api)
            with console.status("blocks, work pools, deployments, workers ..."):
                stack.run(str(BIN / "prefect"), "block", "register", "-m", "blocks")
                stack.run(sys.executable, "-m", "deployments.pools")
                stack.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
                stack.start("worker-default", str(BIN / "prefect"), "worker", "start", "--pool", "default")
                stack.start("worker-trainium", str(BIN / "prefect"), "worker", "start", "--pool", "trainium")
            console.print(f"corpus served at {corpus_url} (OpenReview API v2 format); Prefect UI at http://127.0.0.1:{port}")
            outcome = asyncio.run(_run_and_watch(api, env["ANNAPURNA_HOME"], console))
            _print_outcome(outcome, env["ANNAPURNA_HOME"], console)
            console.print("artifacts on the runs: " + ", ".join(f"{k} ({t})" for k, t in outcome["artifacts"]))
            console.print(f"\nPrefect UI: [bold]http://127.0.0.1:{port}[/bold] (runs, artifacts, work pools)")
            if keep_running:
                console.print("The server stays up for browsing. Ctrl-C (or `make demo-stop`) stops it.")
                signal.signal(signal.SIGTERM, _interrupt)  # `make demo-stop` ends it like Ctrl-C
                try:
                    while all(p.poll() is None for p in stack.procs[:1]):
                        time.sleep(1)
                except KeyboardInterrupt:
                    pass
            return outcome | {"api": api}
        finally:
            stack.stop()


async def _run_and_watch(api: str, home: str, console: Console) -> dict:
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from blocks.sqlite_index import SQLitePaperIndex

    index = SQLitePaperIndex(path=str(Path(home) / "index.sqlite3"))
    with temporary_settings(updates={PREFECT_API_URL: api}):
        run = await run_deployment("scrape-conference/iclr", timeout=0, as_subflow=False,
                                   parameters={"year": 2025, "execution_batch_size": 2})
        columns = (TextColumn("[bold]scrape-conference/iclr[/bold] {task.description}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total} papers settled"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("starting", total=len(DEMO_PAPERS))
            async with get_client() as client:
                while True:
                    run = await client.read_flow_run(run.id)
                    try:
                        counts = index.counts()
                    except Exception:  # the index does not exist until the first paper lands
                        counts = {}
                    settled = sum(v for k, v in counts.items() if k.value in FINAL)
                    busy = ", ".join(f"{v} {k.value}" for k, v in counts.items() if v and k.value not in FINAL)
                    bar.update(task, completed=settled, description=f"{run.state.name.lower()}; {busy or '...'}")
                    if run.state.is_final():
                        break
                    await asyncio.sleep(1)
                artifacts = await client.read_artifacts()
        return {"flow_run_id": str(run.id), "state": run.state.name,
                "papers": {p.id: p.status.value for p in index.list_papers()},
                "artifacts": sorted({(a.key, a.type) for a in artifacts if a.key})}


def preflight_word(report: dict | None) -> str:
    from tasks.execute import preflight_state

    state = preflight_state(report)
    return "preflight " + (state.upper() if state == "failed" else state or "-")


def _print_outcome(outcome: dict, home: str, console: Console) -> None:
    from blocks.sqlite_index import SQLitePaperIndex

    table = Table(title=f"What became of each paper (flow run {outcome['state']})")
    for col in ("paper", "title", "status", "code versions: preflight, verdict", "beats baseline", "metrics / reason"):
        table.add_column(col, overflow="fold")
    for p in SQLitePaperIndex(path=str(Path(home) / "index.sqlite3")).list_papers():
        code = p.code_versions[-1] if p.code_versions else None
        detail = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in (code.metrics if code else {}).items())
        versions = "; ".join(f"v{v.version}: {preflight_word(v.preflight)}, {v.training or '-'}" for v in p.code_versions)
        table.add_row(p.id, p.title[:48], p.status.value, versions or "-",
                      "-" if not code or code.beats_baseline is None else str(code.beats_baseline),
                      detail or (p.history[-1].reason or "")[:70])
    console.print(table)


def stop() -> None:
    pids = Path(".demo/pids")
    for pid in (pids.read_text().split() if pids.exists() else []):
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    pids.unlink(missing_ok=True)
    print("demo stopped")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stop", action="store_true", help="stop a demo left running")
    ap.add_argument("--no-wait", action="store_true", help="stop the stack once the run is over")
    args = ap.parse_args()
    if args.stop:
        stop()
        return 0
    outcome = run_demo(REPO / ".demo", keep_running=not args.no_wait)
    return 0 if outcome["state"] == "Completed" else 1


if __name__ == "__main__":
    sys.exit(main())
