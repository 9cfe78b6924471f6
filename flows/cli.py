"""The `annapurna` command. Errors we raise on purpose print as one line, exit code 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# Source retries (logger "annapurna.sources") reach the run's log, as on the workers.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "annapurna")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # outside a flow: the terminal only

import typer
from rich.console import Console
from rich.table import Table

from blocks.errors import AnnapurnaError
from blocks.settings import Settings, load_settings, paper_index

app = typer.Typer(help="Annapurna: new ML papers, judged, implemented and run on Trainium.", no_args_is_help=True)
papers_app = typer.Typer(help="Look at papers in the index.", no_args_is_help=True)
app.add_typer(papers_app, name="papers")
console = Console()
JSON = typer.Option(False, "--json", help="print JSON")
UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_since(text: str | None):
    """'2d', '12h', '30m' or an ISO date/time -> an aware datetime (None stays None)."""
    import re
    from datetime import datetime, timedelta, timezone

    if not text:
        return None
    m = re.fullmatch(r"(\d+)([dhm])", text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return datetime.now(timezone.utc) - timedelta(**{UNITS[unit]: n})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration like 2d / 12h or an ISO date", param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def date_year() -> int:
    from datetime import date

    return date.today().year


def paper_rows(papers) -> list[dict]:
    return [{"id": p.id, "status": p.status.value, "venue": f"{p.venue} {p.year or ''}".strip(), "title": p.title,
             "updated": p.updated_at.isoformat(timespec="seconds"), "error": p.error or ""} for p in papers]


def print_rows(rows: list[dict], as_json: bool, title: str = "") -> None:
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=title or None)
    for col in (rows[0].keys() if rows else ["(none)"]):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


def print_fields(fields: dict, label: str) -> None:
    """A model's fields, one row each; lists and dicts as JSON."""
    table = Table(label, "value")
    for k, v in fields.items():
        table.add_row(k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))
    console.print(table)


def _settings_rows(settings: Settings) -> dict[str, str]:
    shown = settings.model_dump()
    return {
        f"ANNAPURNA_{k.upper()}": ("****" if "password" in k and v else "" if v is None else str(v))
        for k, v in shown.items()
    }


@app.command()
def settings(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Show every setting as resolved from env, .env and the embedded defaults."""
    rows = _settings_rows(load_settings())
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("setting", "value")
    for k, v in rows.items():
        table.add_row(k, v)
    console.print(table)


@app.command()
def counts(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Papers in the index, per status."""
    found = {k.value: v for k, v in paper_index().counts().items()}
    if as_json:
        print(json.dumps(found))
        return
    table = Table("status", "papers")
    for k, v in found.items():
        table.add_row(k, str(v))
    console.print(table)


@app.command()
def scrape(
    venue: str = typer.Argument(..., help="ICLR, ICML, NeurIPS, MLSys, or arxiv"),
    year: int = typer.Option(None, help="conference year (not for arxiv)"),
    search: str = typer.Option(None, "--search", help="keep papers whose title/abstract has every word"),
    max_papers: int = typer.Option(None, "--max", help="at most this many papers"),
    source: str = typer.Option(None, help="pick another source: openreview, pmlr, proceedings"),
    track: str = typer.Option(None, help="one track only (e.g. main, Datasets_and_Benchmarks); default: every track"),
    category: list[str] = typer.Option(None, "--category", help="arXiv category, repeatable (default: cs.LG cs.CL cs.AI cs.CV)"),
    batch_size: int = typer.Option(25, help="papers per batch"),
    until: str = typer.Option("execute", help="stop after: scrape, judge, generate or execute"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Scrape a venue (or arXiv) now, in this process, with the same flow the deployments run."""
    import asyncio

    from tasks.sources.arxiv import DEFAULT_CATEGORIES, validate_categories
    from tasks.sources.venues import route

    load_settings()  # fail fast on bad settings, before Prefect starts
    # ... and on a venue, year, source or category that nothing serves, before any network call
    if venue.lower() == "arxiv":
        if year is not None or source or track:
            raise typer.BadParameter("arxiv takes no --year, --source or --track (use --category)")
        categories = validate_categories(category or list(DEFAULT_CATEGORIES))
        from flows.scrape_arxiv import scrape_arxiv

        run = scrape_arxiv(categories=categories, search_term=search, max_papers=max_papers or 500,
                           batch_size=batch_size, until=until, return_state=True)
    else:
        if category:
            raise typer.BadParameter("--category is for arxiv only", param_hint="--category")
        if year is None:
            route(venue, date_year())  # an unknown venue says so before asking for a year
            raise typer.BadParameter("--year is required for a conference", param_hint="--year")
        route(venue, year, source)
        from flows.scrape_conference import scrape_conference

        run = scrape_conference(venue=venue, year=year, search_term=search, max_papers=max_papers,
                                batch_size=batch_size, source=source, track=track, until=until, return_state=True)
    state = asyncio.run(run)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        raise outcome if isinstance(outcome, AnnapurnaError) else AnnapurnaError(f"scrape failed: {outcome}")
    report = outcome.scrape
    if as_json:
        print(outcome.model_dump_json(indent=2))
        return
    console.print(
        f"listed {report.listed}, selected {report.selected}: [green]{len(report.new)} new[/green], "
        f"{report.known} already stored, [red]{len(report.pdf_failures)} PDF failures[/red], "
        f"{len(report.problems)} problems"
    )
    for pid, why in report.pdf_failures.items():
        console.print(f"  {pid}: {why}", highlight=False)
    finals = {}
    for status in outcome.chain.final.values():
        finals[status] = finals.get(status, 0) + 1
    console.print(f"after the chain (until {until}): {finals or 'nothing'}; execution: {outcome.chain.execution}")


@app.command()
def status(watch: bool = typer.Option(False, "--watch", help="refresh every 5 s"), as_json: bool = JSON) -> None:
    """Papers per status, runs waiting per pool, the trn1 instance, recent failures, last day's spend."""
    import time

    from tasks.ops import status as board

    while True:
        b = board()
        if as_json:
            print(b.model_dump_json(indent=2))
        else:
            if watch:
                console.clear()
            console.print("papers: " + ", ".join(f"{k} {v}" for k, v in b.papers.items() if v) or "papers: none")
            waiting = ", ".join(f"{pool}: {w.get('count', 0)} waiting (oldest {w.get('oldest_wait_s', 0):.0f} s)"
                                if "count" in w else f"{pool}: {w.get('reason')}" for pool, w in b.waiting_runs.items())
            console.print(f"runs waiting: {waiting or 'none'}")
            console.print(f"trn1 instance: {b.instance}")
            u = b.last_day
            console.print(f"last day: {u.calls} model calls, {u.input_tokens + u.output_tokens} tokens, ${u.dollars:.4f}")
            console.print("last day's runs: " + (", ".join(f"{k} {v}" for k, v in b.runs_last_day.items()) or "none"))
            if b.failures:
                print_rows(b.failures, False, "recent failures")
        if not watch:
            return
        time.sleep(5)


@papers_app.command("list")
def papers_list(status_: str = typer.Option(None, "--status", help="e.g. executed, execution_failed"),
                venue: str = typer.Option(None, help="e.g. ICLR"), since: str = typer.Option(None, help="2d, 12h or a date"),
                limit: int = typer.Option(50), as_json: bool = JSON) -> None:
    """Papers, most recently updated first."""
    from blocks.paper import PaperStatus

    try:
        wanted = PaperStatus(status_) if status_ else None
    except ValueError:
        raise typer.BadParameter(f"unknown status {status_!r}; one of {', '.join(s.value for s in PaperStatus)}",
                                 param_hint="--status") from None
    print_rows(paper_rows(paper_index().list_papers(status=wanted, venue=venue, since=parse_since(since), limit=limit)),
               as_json)


@papers_app.command("search")
def papers_search(text: str, limit: int = typer.Option(20), as_json: bool = JSON) -> None:
    """Full-text search over titles and abstracts."""
    print_rows(paper_rows(paper_index().search(text, limit=limit)), as_json)


@papers_app.command("show")
def papers_show(paper_id: str, as_json: bool = JSON) -> None:
    """Every field of a paper: the verdict, every code version with its result and metrics."""
    from tasks.ops import show

    doc = show(paper_id)
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
        return
    console.print(f"[bold]{doc['title']}[/bold]  ({doc['id']}, {doc['venue']} {doc['year'] or ''}) — {doc['status']}")
    console.print(f"authors: {', '.join(doc['authors'])}\npdf: {doc['pdf_url']}  stored: {doc['pdf_key']}")
    if doc["verdict"]:
        v = doc["verdict"]
        console.print(f"verdict: relevant={v['relevant']} relevance={v['relevance']} novelty={v['novelty']} "
                      f"implementable={v['implementable']} ({v['model']}): {v['reason']}")
    for h in doc["history"]:
        console.print(f"  {h['at'][:19]}  {h['status']:<17} {h['reason'] or ''}", highlight=False)
    for c in doc["code_versions"]:
        r = c.get("result") or {}
        console.print(f"code v{c['version']} ({c['code_key']}): training={c.get('training')} "
                      f"({c.get('training_reason') or ''}) beats_baseline={c.get('beats_baseline')} "
                      f"success={c['success']} error={c['error']} "
                      f"metrics={c['metrics']} time={r.get('execution_time')}s peak={r.get('peak_memory_mb')}MB "
                      f"device={r.get('device')} isolation={r.get('isolation')}", highlight=False)
    if doc["error"]:
        console.print(f"[red]error:[/red] {doc['error']}", highlight=False)


@papers_app.command("download")
def papers_download(paper_id: str, directory: Path, code: bool = typer.Option(False, "--code"),
                    results: bool = typer.Option(False, "--results"), pdf: bool = typer.Option(False, "--pdf"),
                    as_json: bool = JSON) -> None:
    """Copy a paper's code, results and/or PDF out of storage (all three if none is named)."""
    from tasks.ops import download

    everything = not (code or results or pdf)
    files = download(paper_id, directory, code or everything, results or everything, pdf or everything)
    if as_json:
        print(json.dumps([str(f) for f in files]))
    else:
        for f in files:
            console.print(str(f), highlight=False)


@app.command("retry-failed")
def retry_failed_cmd(stage: str = typer.Option(None, help="judge, generate or execute (default: all)"),
                     since: str = typer.Option(None, help="2d, 12h or a date"),
                     dry_run: bool = typer.Option(False, "--dry-run", help="show what would be retried"),
                     as_json: bool = JSON) -> None:
    """Send failed papers through their stage again (the dead-letter replay)."""
    import asyncio

    from flows.retry_failed import failed_papers, retry_failed

    if stage not in (None, "judge", "generate", "execute"):
        raise typer.BadParameter("one of judge, generate, execute", param_hint="--stage")
    todo = failed_papers(stage, parse_since(since))
    if dry_run:
        rows = [{"stage": k, "paper": p.id, "status": p.status.value, "reason": p.error or ""} for k, v in todo.items() for p in v]
        print_rows(rows, as_json, "would retry")
        return
    result = asyncio.run(retry_failed(stage=stage, since=parse_since(since)))
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        print_rows([{"paper": k, "now": v} for k, v in result.final.items()], False, "retried")


@app.command()
def report(since: str = typer.Option("7d", help="2d, 12h or a date"),
           out: Path = typer.Option(None, help="also write the report as markdown here"),
           plot: Path = typer.Option(None, "--plot", help="also draw runs per day and loss curves to this PNG"),
           as_json: bool = JSON) -> None:
    """Throughput, success rates per stage, cost per 100 papers, execution success rate."""
    from tasks.ops import report as make_report
    from tasks.ops import report_markdown

    r = make_report(parse_since(since))
    if out:
        out.write_text(report_markdown(r))
    if plot:
        from tasks.plot import plot as draw

        draw(parse_since(since), plot)
    if as_json:
        print(r.model_dump_json(indent=2))
    else:
        console.print(report_markdown(r), highlight=False)


def _worker(device_label: str | None = None):
    """The worker's configuration and devices, from settings, as `execute-batch` builds them."""
    from tasks.execute import worker_config
    from trainium_worker.devices import Device, discover

    config = worker_config(load_settings())
    if device_label is None:
        return config, discover(config)
    kind, _, index = device_label.partition(":")
    if kind not in ("neuron", "cuda", "cpu") or not index.isdigit():
        raise typer.BadParameter(f"{device_label!r} is not neuron:N, cuda:N or cpu:N", param_hint="--device")
    return config, [Device(kind=kind, index=int(index))]


def _pool_status(name: str) -> dict:
    """The work pool this worker serves, as the Prefect server sees it (when one is reachable):
    its status and how many workers poll it."""
    import asyncio

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    found: dict = {"name": name, "api": PREFECT_API_URL.value(), "status": None, "workers_online": None}
    if not found["api"]:
        found["error"] = "PREFECT_API_URL is not set"
        return found

    async def ask() -> None:
        async with get_client() as client:
            pool = await client.read_work_pool(name)
            workers = await client.read_workers_for_work_pool(name)
            found["status"] = str(pool.status.value if pool.status else None)
            found["workers_online"] = sum(1 for w in workers if str(w.status.value) == "ONLINE")

    try:
        asyncio.run(asyncio.wait_for(ask(), 15))
    except Exception as e:  # noqa: BLE001 - health reports, it does not fail on the server's account
        found["error"] = f"{type(e).__name__}: {e}"[:300]
    return found


@app.command()
def health(as_json: bool = JSON) -> None:
    """Is this machine ready to run programs? Devices, Neuron stack versions, isolation and
    its floor, the compile cache from inside the sandbox, free disk. Exit 1 when unhealthy."""
    from trainium_worker.health import check

    config, devices = _worker()
    h = check(devices, config, load_settings().execution_timeout_s)
    h.pool = _pool_status("trainium")
    if as_json:
        print(h.model_dump_json(indent=2))
    else:
        print_fields(h.model_dump(), "check")
    if h.status != "ok":
        Console(stderr=True).print(f"[red]unhealthy:[/red] {'; '.join(h.reasons)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def execute(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a Python program"),
    paper_id: str = typer.Option(None, "--paper-id", help="the paper it belongs to (default: file:<name>)"),
    timeout: float = typer.Option(None, "--timeout", help="seconds (default ANNAPURNA_EXECUTION_TIMEOUT_S)"),
    memory_mb: int = typer.Option(None, "--memory-mb", help="cap on the process tree's resident memory"),
    allow_network: bool = typer.Option(False, "--allow-network", help="let the program reach the network"),
    device: str = typer.Option(None, "--device", help="neuron:0, cuda:0 or cpu:0 (default: this machine's first)"),
    as_json: bool = JSON,
) -> None:
    """Run one file through exactly the worker's path (sandbox, limits, device environment,
    device probe) and print its ExecutionResult. Exit 1 when the run failed."""
    import asyncio

    from tasks.execute import limits
    from trainium_worker.devices import neuron_core_count
    from trainium_worker.job import Job
    from trainium_worker.runner import Runner

    config, devices = _worker(device)
    slot = devices[0]
    lim = limits(load_settings(), timeout)
    if memory_mb:
        lim = lim.model_copy(update={"memory_mb": memory_mb})
    job = Job(paper_id=paper_id or f"file:{file.name}", code=file.read_text(), limits=lim, allow_network=allow_network)
    result, _files = asyncio.run(Runner([slot], config).run(job, slot))
    if slot.kind == "neuron" and not neuron_core_count():
        result.notes.append("no NeuronCore on this machine: the Neuron environment (compile cache binding, PATH, "
                            "variables) was built, but no Neuron runtime ran the program")
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        print_fields(result.model_dump(exclude={"stdout", "stderr", "metrics_series"}), "field")
        console.print(result.stdout[-2000:] or "(no output)", highlight=False, markup=False)
    if not result.success:
        raise typer.Exit(1)


@app.command()
def preflight(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a Python program"),
    as_json: bool = JSON,
) -> None:
    """Run one file once under torch-xla on the CPU (ANNAPURNA_PREFLIGHT_PYTHON), as the
    preflight stage does before any trn1 time, and print its report. Exit 1 when it fails."""
    import asyncio

    from tasks.execute import preflight_limits, worker_config
    from trainium_worker.preflight import preflight as run_preflight

    s = load_settings()
    if not s.preflight_python:
        raise AnnapurnaError("ANNAPURNA_PREFLIGHT_PYTHON is not set: `make preflight-env` builds the torch-xla "
                             "interpreter and prints the line to set")
    report, result = asyncio.run(run_preflight(file.read_text(), s.preflight_python, worker_config(s), preflight_limits(s),
                                               f"file:{file.name}"))
    if as_json:
        print(json.dumps({"report": report.model_dump(), "result": result.model_dump(mode="json")}, indent=2))
    else:
        console.print(report.text(), highlight=False, markup=False)
    if not report.passed:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except AnnapurnaError as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
