"""Persisting what a scrape found, before anything else happens to it: the raw PDF and
its text in the raw store, then the index record "scraped". A paper already indexed with
its PDF is left alone, so a re-run neither stores nor indexes it twice."""

from __future__ import annotations

from prefect.filesystems import WritableFileSystem

from blocks.index import PaperIndex
from blocks.paper import Paper
from tasks.pdf import PdfError, extract_text
from tasks.storage import put_once, raw_pdf_key, raw_text_key


def pdf_fields(paper_id: str, pdf: bytes | None, raw: WritableFileSystem, failure: str | None = None) -> dict:
    """Store a PDF and its text; return the paper fields that record them, or the failure.

    A PDF that cannot be read is not stored (a later good download must be able to take
    its key); its reason goes into `error`.
    """
    if pdf is None:
        return {"error": failure or "no PDF"}
    try:
        text = extract_text(pdf)
    except PdfError as e:
        return {"error": f"pdf: {e}"}
    fields = {
        "content_hash": put_once(raw, raw_pdf_key(paper_id), pdf),
        "pdf_key": raw_pdf_key(paper_id),
        "text_key": raw_text_key(paper_id),
        "page_count": text.page_count,
        "error": None,
    }
    put_once(raw, raw_text_key(paper_id), text.text.encode())
    return fields


def persist_scraped(paper: Paper, pdf: bytes | None, raw: WritableFileSystem, index: PaperIndex,
                    failure: str | None = None) -> Paper:
    """Store and index one scraped paper; return its record as indexed.

    A paper indexed before without its PDF gets the PDF fields filled in (its status and
    everything else untouched); one indexed with its PDF is returned as it is.
    """
    existing = index.get(paper.id)
    if existing is not None and existing.pdf_key:
        return existing
    fields = pdf_fields(paper.id, pdf, raw, failure)
    if existing is not None:
        return index.update(paper.id, lambda p: p.model_copy(update=fields))
    index.add_new([paper.model_copy(update=fields)])
    return index.require(paper.id)
