"""The `annapurna` command. Errors we raise on purpose print as one line, exit code 2."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from blocks.errors import AnnapurnaError
from blocks.settings import Settings, load_settings, paper_index

app = typer.Typer(help="Annapurna: new ML papers, judged, implemented and run on Trainium.", no_args_is_help=True)
console = Console()


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
    batch_size: int = typer.Option(25, help="papers per batch"),
    until: str = typer.Option("execute", help="stop after: scrape, judge, generate or execute"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Scrape a venue (or arXiv) now, in this process, with the same flow the deployments run."""
    import asyncio

    load_settings()  # fail fast on bad settings, before Prefect starts
    if venue.lower() == "arxiv":
        from flows.scrape_arxiv import scrape_arxiv

        run = scrape_arxiv(search_term=search, max_papers=max_papers or 500, batch_size=batch_size, until=until, return_state=True)
    else:
        from flows.scrape_conference import scrape_conference

        if year is None:
            raise typer.BadParameter("--year is required for a conference", param_hint="--year")
        run = scrape_conference(venue=venue, year=year, search_term=search, max_papers=max_papers,
                                batch_size=batch_size, source=source, until=until, return_state=True)
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


def main() -> None:
    try:
        app()
    except AnnapurnaError as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
