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


def main() -> None:
    try:
        app()
    except AnnapurnaError as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
