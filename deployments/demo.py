"""`make demo`: runs what Annapurna can do so far on embedded defaults, offline.

Today that is the foundation: a corpus the project makes itself is stored (raw PDFs and
their text, write-once) and indexed in SQLite, and the index is shown. State is kept under
ANNAPURNA_HOME (the Makefile uses ./.demo/home) and reused on purpose: a second run adds
nothing, which is the point. `make demo-clean` starts over.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from blocks.errors import AnnapurnaError
from blocks.paper import Paper
from blocks.settings import filesystem, load_settings, paper_index
from deployments.demo_corpus import DEMO_PAPERS, make_pdf
from tasks.persist import persist_scraped


def main() -> int:
    console = Console()
    try:
        settings = load_settings()
        index, raw = paper_index(settings), filesystem("raw", settings)
        before = sum(index.counts().values())
        papers = [
            persist_scraped(
                Paper(
                    id=f"openreview:{d.forum}", source="openreview", venue="ICLR", year=2025,
                    title=d.title, authors=d.authors, abstract=d.abstract,
                    pdf_url=f"https://openreview.net/pdf?id={d.forum}",
                ),
                make_pdf(d), raw, index,
            )
            for d in DEMO_PAPERS
        ]
    except AnnapurnaError as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    table = Table(title=f"Papers in {index.path}")
    table.add_column("id", no_wrap=True)
    table.add_column("status")
    table.add_column("pages")
    table.add_column("title", overflow="ellipsis", no_wrap=True, max_width=48)
    table.add_column("recorded problem")
    for p in papers:
        table.add_row(p.id, p.status, str(p.page_count or "-"), p.title, p.error or "")
    console.print(table)
    counts = {k.value: v for k, v in index.counts().items() if v}
    console.print(f"new this run: {sum(counts.values()) - before}; by status: {counts}")
    console.print(f"raw store: {raw.basepath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
