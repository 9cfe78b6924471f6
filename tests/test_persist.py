"""PDF reading and persisting a scraped paper: raw PDF + text, then the index record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pymupdf
import pytest
from conftest import shared_fixture

from blocks.paper import Paper
from blocks.settings import filesystem, load_settings, paper_index
from deployments.demo_corpus import DEMO_PAPERS, make_pdf
from tasks.pdf import PdfError, extract_text
from tasks.persist import persist_scraped
from tasks.storage import read_object

GOOD = make_pdf(DEMO_PAPERS[0])


def encrypted_pdf() -> bytes:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret")
    return doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o")


def test_extract_text_from_a_made_pdf():
    text = extract_text(GOOD)
    assert text.page_count == 2 and "Low-Rank Adapters" in text.text and "AdamW" in text.text


@pytest.mark.parametrize("name", ["N18-3011.pdf", "2020.acl-main.207.pdf"])
def test_extract_text_from_real_papers(name):
    text = extract_text(shared_fixture(f"pdf/{name}").read_bytes())
    assert text.page_count >= 5
    assert ("Semantic Scholar" if name.startswith("N18") else "SPECTER") in text.text


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"<!DOCTYPE html><html>rate limited</html>", "not a PDF"),
        (GOOD[: len(GOOD) // 2], "truncated PDF"),
        (b"%PDF-1.7\n" + bytes(range(256)) * 20 + b"\n%%EOF\n", "corrupt or truncated PDF"),
        (encrypted_pdf(), "encrypted PDF"),
    ],
)
def test_bad_pdfs_get_a_clear_reason(data, reason):
    with pytest.raises(PdfError, match=reason):
        extract_text(data)


def paper(forum: str, title: str = "A paper") -> Paper:
    return Paper(id=f"openreview:{forum}", source="openreview", venue="ICLR", year=2025, title=title)


def test_persist_stores_pdf_and_text_then_indexes_once(home):
    s = load_settings()
    index, raw = paper_index(s), filesystem("raw", s)
    stored = persist_scraped(paper("abc"), GOOD, raw, index)
    assert stored.status == "scraped" and stored.page_count == 2 and stored.error is None
    assert read_object(raw, stored.pdf_key) == GOOD
    assert b"Low-Rank Adapters" in read_object(raw, stored.text_key)
    index.transition(stored.id, "judged")
    again = persist_scraped(paper("abc", "A re-scraped title"), GOOD, raw, index)
    assert again.status == "judged" and again.title == "A paper"  # untouched by the re-run
    assert sum(index.counts().values()) == 1


def test_a_bad_pdf_is_recorded_and_not_stored(home):
    s = load_settings()
    index, raw = paper_index(s), filesystem("raw", s)
    stored = persist_scraped(paper("bad"), b"<html>", raw, index)
    assert stored.error.startswith("pdf: not a PDF") and stored.pdf_key is None
    assert read_object(raw, "openreview/bad/paper.pdf") is None


def test_cli_prints_one_line_errors(home):
    env = {**os.environ, "ANNAPURNA_INDEX": "mysql"}
    cli = str(Path(sys.executable).with_name("annapurna"))
    out = subprocess.run([cli, "counts"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: setting ANNAPURNA_INDEX is invalid: Input should be 'sqlite' or 'opensearch' (got 'mysql')"
    )
    ok = subprocess.run([cli, "counts", "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and '"scraped": 0' in ok.stdout
