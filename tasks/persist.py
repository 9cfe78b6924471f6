"""Persisting what a scrape found, before anything else happens to it: the raw PDF and
its text in the raw store, then the index record "scraped". A paper already indexed is
left alone, so a re-run neither stores nor indexes it twice."""

from __future__ import annotations

from prefect.filesystems import WritableFileSystem

from blocks.index import PaperIndex
from blocks.paper import Paper
from tasks.pdf import PdfError, extract_text
from tasks.storage import put_once, raw_pdf_key, raw_text_key


def persist_scraped(paper: Paper, pdf: bytes | None, raw: WritableFileSystem, index: PaperIndex) -> Paper:
    """Store and index one scraped paper; return its record as indexed.

    A PDF that cannot be read is not stored (a later good download must be able to take
    its key); the paper is indexed with the reason in `error`, so nothing is lost.
    """
    existing = index.get(paper.id)
    if existing is not None:
        return existing
    if pdf is not None:
        try:
            text = extract_text(pdf)
        except PdfError as e:
            paper = paper.model_copy(update={"error": f"pdf: {e}"})
        else:
            paper = paper.model_copy(
                update={
                    "content_hash": put_once(raw, raw_pdf_key(paper.id), pdf),
                    "pdf_key": raw_pdf_key(paper.id),
                    "text_key": raw_text_key(paper.id),
                    "page_count": text.page_count,
                }
            )
            put_once(raw, raw_text_key(paper.id), text.text.encode())
    index.add_new([paper])
    return index.require(paper.id)
