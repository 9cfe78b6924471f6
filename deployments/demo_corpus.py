"""A small corpus the project makes itself for the offline demo and the tests: paper
records and real PDFs written with PyMuPDF. Nothing here is copied from recorded data."""

from __future__ import annotations

import pymupdf
from pydantic import BaseModel


class DemoPaper(BaseModel):
    forum: str
    title: str
    authors: list[str]
    abstract: str
    body: str
    corrupt_pdf: bool = False


DEMO_PAPERS = [
    DemoPaper(
        forum="dEm0LoRA01",
        title="Low-Rank Adapters Train Small Transformers Faster on Synthetic Sequence Tasks",
        authors=["Ada Park", "Bo Chen"],
        abstract="We add low-rank adapters to a two-layer transformer and train on synthetic "
        "copy and sort tasks. Adapters reach the full model's loss with 12% of the trainable "
        "parameters and converge in fewer steps.",
        body="Method. A rank-8 update is added to every attention projection. Training uses "
        "AdamW with learning rate 3e-4, batch size 32 and 500 steps on sequences of length 64.",
    ),
    DemoPaper(
        forum="dEm0NoRm02",
        title="Root-Mean-Square Normalisation Stabilises Deep MLP Training",
        authors=["Chidi Okafor"],
        abstract="Replacing layer normalisation with RMS normalisation in a 12-layer MLP "
        "removes loss spikes on a synthetic regression benchmark and lowers final validation error.",
        body="Setup. Inputs are 32-dimensional Gaussian vectors; targets a fixed random "
        "two-layer network. We report mean squared error on a held-out split.",
    ),
    DemoPaper(
        forum="dEm0ReCiPe3",
        title="A Survey of Bread Recipes in Medieval Manuscripts",
        authors=["Dana Weiss"],
        abstract="We catalogue 140 bread recipes from manuscripts of the 12th to 15th century "
        "and trace the spread of sourdough techniques across monasteries.",
        body="Sources. Manuscripts were read in archives; no computation was involved.",
    ),
    DemoPaper(
        forum="dEm0BrOkEn4",
        title="Contrastive Pretraining of Tiny Vision Models (PDF damaged in transit)",
        authors=["Eve Santos", "Femi Adeyemi"],
        abstract="A contrastive objective for convolutional networks with under one million "
        "parameters on synthetic image pairs.",
        body="This PDF is cut short on purpose to show how a damaged download is recorded.",
        corrupt_pdf=True,
    ),
]


def make_pdf(paper: DemoPaper) -> bytes:
    """A real two-page PDF: title, authors and abstract, then the body. Deterministic."""
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_textbox(pymupdf.Rect(72, 72, 540, 140), paper.title, fontsize=16, fontname="helv")
    page.insert_textbox(pymupdf.Rect(72, 150, 540, 180), ", ".join(paper.authors), fontsize=11)
    page.insert_textbox(pymupdf.Rect(72, 200, 540, 500), "Abstract. " + paper.abstract, fontsize=11)
    doc.new_page().insert_textbox(pymupdf.Rect(72, 72, 540, 770), paper.body, fontsize=11)
    # the same paper always gives the same bytes, as a re-download does
    doc.set_metadata({"title": paper.title, "author": ", ".join(paper.authors), "creationDate": "D:20250101000000Z",
                      "modDate": "D:20250101000000Z", "producer": "annapurna demo corpus"})
    data = doc.tobytes(garbage=3, deflate=True, no_new_id=True)
    return data[: len(data) // 3] if paper.corrupt_pdf else data


def demo_server(latency_s: float = 0.0):
    """The replay server loaded with the demo corpus: ICLR 2025 on OpenReview (API v2
    format, login required, as the real one) and each paper's PDF."""
    from deployments.replay import Canned, ReplayServer, v2_note

    server = ReplayServer(latency_s=latency_s)
    notes = [
        v2_note(d.forum, i + 1, "ICLR.cc/2025/Conference", "ICLR 2025 Poster", d.title, d.abstract, d.authors,
                f"/pdf/{d.forum}.pdf")
        for i, d in enumerate(DEMO_PAPERS)
    ]
    server.add_notes("or2", "ICLR.cc/2025/Conference", notes)
    for d in DEMO_PAPERS:
        server.add(f"/pdf/{d.forum}.pdf", Canned(make_pdf(d), content_type="application/pdf"))
    return server
