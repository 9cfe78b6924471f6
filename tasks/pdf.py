"""Reading a downloaded PDF. A bad file becomes a PdfError with a reason that is recorded
on the paper; it never takes the run down."""

from __future__ import annotations

import pymupdf
from pydantic import BaseModel

from blocks.errors import AnnapurnaError

pymupdf.TOOLS.mupdf_display_errors(False)  # MuPDF would print repair chatter to stderr


class PdfError(AnnapurnaError):
    """The bytes are not a usable PDF; the message says why."""


class PdfText(BaseModel):
    page_count: int
    text: str


def extract_text(data: bytes, max_pages: int | None = None) -> PdfText:
    """Page count and plain text of a PDF, or a PdfError saying what is wrong with it."""
    if not data:
        raise PdfError("empty file (0 bytes)")
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise PdfError(f"not a PDF (starts with {data[:16]!r})")
    if b"%%EOF" not in data[-2048:]:
        raise PdfError(f"truncated PDF (no %EOF marker in the last 2 KiB of {len(data)} bytes)")
    try:
        doc = pymupdf.open(stream=data, filetype="pdf")
    except Exception as e:
        raise PdfError(f"corrupt or truncated PDF ({e})") from None
    with doc:
        if doc.needs_pass:
            raise PdfError("encrypted PDF (needs a password)")
        if doc.page_count == 0:
            raise PdfError("PDF has no pages")
        try:
            pages = range(min(doc.page_count, max_pages or doc.page_count))
            text = "\n".join(doc[i].get_text() for i in pages)
        except Exception as e:
            raise PdfError(f"unreadable PDF content ({e})") from None
        return PdfText(page_count=doc.page_count, text=text)
