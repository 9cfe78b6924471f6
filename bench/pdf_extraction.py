"""PDF text extraction, pages per second: PyMuPDF (what Annapurna uses) against pypdf,
on the same PDFs in the same run: the two real papers in ../shared/fixtures/pdf when
present, and 20 ten-page PDFs the script writes itself.

    .venv/bin/python bench/pdf_extraction.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from pathlib import Path

import pymupdf

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pdf"
WORDS = ("gradient attention transformer optimizer latent diffusion kernel batch normalisation "
         "token sequence entropy convolution residual adapter sparse").split()


def made_pdf(seed: int, pages: int = 10) -> bytes:
    doc = pymupdf.open()
    for p in range(pages):
        text = " ".join(WORDS[(seed * 7 + p * 3 + i) % len(WORDS)] for i in range(900))
        doc.new_page().insert_textbox(pymupdf.Rect(50, 50, 560, 790), text, fontsize=8)
    return doc.tobytes(deflate=True)


def with_pymupdf(data: bytes) -> tuple[int, int]:
    with pymupdf.open(stream=data, filetype="pdf") as doc:
        return doc.page_count, sum(len(page.get_text()) for page in doc)


def with_pypdf(data: bytes) -> tuple[int, int]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return len(reader.pages), sum(len(page.extract_text() or "") for page in reader.pages)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    pdfs = {p.name: p.read_bytes() for p in sorted(SHARED.glob("*.pdf"))} if SHARED.exists() else {}
    pdfs.update({f"made-{i}.pdf": made_pdf(i) for i in range(20)})
    results = {}
    for name, fn in (("PyMuPDF", with_pymupdf), ("pypdf", with_pypdf)):
        runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            pages = chars = 0
            for data in pdfs.values():
                n, c = fn(data)
                pages, chars = pages + n, chars + c
            runs.append(time.perf_counter() - t)
        results[name] = (pages, chars, statistics.median(runs))
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, PyMuPDF {pymupdf.VersionBind}")
    print(f"{len(pdfs)} PDFs ({'with' if SHARED.exists() else 'without'} the two real papers from ../shared), median of {args.repeat}")
    print(f"{'library':10} {'pages':>6} {'chars':>9} {'seconds':>8} {'pages/s':>8}")
    for name, (pages, chars, secs) in results.items():
        print(f"{name:10} {pages:>6} {chars:>9} {secs:>8.3f} {pages / secs:>8.0f}")
    print(f"PyMuPDF is {results['pypdf'][2] / results['PyMuPDF'][2]:.1f}x faster")


if __name__ == "__main__":
    main()
