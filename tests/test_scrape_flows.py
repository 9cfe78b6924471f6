"""The scrape flows on a real Prefect server, against the replay server: every PDF
failure kind, batching, selection, a re-run that adds nothing, and the arXiv rate limit."""

from __future__ import annotations

import asyncio
import json
import time

import pymupdf
import pytest
from conftest import shared_fixture

from blocks.settings import filesystem, load_settings, paper_index
from deployments.demo_corpus import DEMO_PAPERS, make_pdf
from deployments.replay import BackgroundReplay, Canned, ReplayServer, atom_entry, atom_feed, v2_note
from tasks.storage import read_object

USER, PASSWORD = "annapurna@example.org", "demo-password"
GOOD = make_pdf(DEMO_PAPERS[0])


def encrypted() -> bytes:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret")
    return doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o")


PDFS = {  # paper number -> what its PDF URL serves
    0: [Canned(GOOD, content_type="application/pdf")],
    1: [Canned(make_pdf(DEMO_PAPERS[1]), content_type="application/pdf")],
    2: [Canned(status=500), Canned(make_pdf(DEMO_PAPERS[2]), content_type="application/pdf")],
    3: [Canned(b"", content_type="application/pdf")],
    4: [Canned("<html>Sign in to download</html>")],
    5: [Canned(GOOD[: len(GOOD) // 2], content_type="application/pdf")],
    6: [Canned(encrypted(), content_type="application/pdf")],
    7: [Canned(status=404)],
}
REASONS = {3: "pdf: empty file", 4: "download: PDF .* not a PDF", 5: "pdf: truncated PDF",
           6: "pdf: encrypted PDF", 7: "download: PDF .* HTTP 404"}
TOPICS = ["attention", "diffusion", "attention", "graphs", "attention", "optimizers", "diffusion", "attention",
          "graphs", "attention"]


def conference_server() -> ReplayServer:
    server = ReplayServer()
    notes = [
        v2_note(f"FoRuM{i:05d}", i, "ICLR.cc/2025/Conference", "ICLR 2025 Poster",
                f"Paper {i} on {TOPICS[i]}", f"We study {TOPICS[i]}.", ["A. Author"], f"/pdf/paper{i}.pdf")
        for i in range(10)
    ]
    server.add_notes("or2", "ICLR.cc/2025/Conference", notes)
    for i in range(10):
        server.add(f"/pdf/paper{i}.pdf", *PDFS.get(i, [Canned(make_pdf(DEMO_PAPERS[i % 3]), content_type="application/pdf")]))
    return server


@pytest.fixture
def scrape_env(home, monkeypatch, prefect_server):
    def point_at(url: str) -> None:
        monkeypatch.setenv("ANNAPURNA_OPENREVIEW_URL", f"{url}/or2")
        monkeypatch.setenv("ANNAPURNA_OPENREVIEW_V1_URL", f"{url}/or1")
        monkeypatch.setenv("ANNAPURNA_OPENREVIEW_WEB_URL", url)
        monkeypatch.setenv("ANNAPURNA_OPENREVIEW_USERNAME", USER)
        monkeypatch.setenv("ANNAPURNA_OPENREVIEW_PASSWORD", PASSWORD)
        monkeypatch.setenv("ANNAPURNA_ARXIV_URL", f"{url}/arxiv/api/query")

    return point_at


def test_scrape_conference_persists_every_paper_and_records_every_pdf_failure(scrape_env):
    from flows.scrape_conference import scrape_conference

    server = conference_server()
    with BackgroundReplay(server) as url:
        scrape_env(url)
        report = asyncio.run(scrape_conference(venue="iclr", year=2025, batch_size=3, until="scrape")).scrape
        hits_after_first = dict(server.hits)
        again = asyncio.run(scrape_conference(venue="iclr", year=2025, batch_size=3, until="scrape")).scrape

    s = load_settings()
    index, raw = paper_index(s), filesystem("raw", s)
    papers = {p.id: p for p in index.list_papers(limit=100)}
    assert len(papers) == 10 and all(p.status == "scraped" for p in papers.values())
    assert sorted(report.new) == sorted(papers) and report.listed == report.selected == 10
    for i in range(10):
        p = papers[f"openreview:FoRuM{i:05d}"]
        if i in REASONS:
            assert p.pdf_key is None and p.error is not None
            assert __import__("re").search(REASONS[i], p.error), (i, p.error)
            assert report.pdf_failures[p.id] == p.error
        else:
            assert p.error is None and p.page_count == 2
            assert read_object(raw, p.pdf_key).startswith(b"%PDF") and read_object(raw, p.text_key)
    assert hits_after_first["/pdf/paper2.pdf"] == 2  # a 500, then the PDF

    # the re-run adds nothing, downloads no stored PDF again, and retries only the failures
    assert again.new == [] and again.known == 5 and sum(index.counts().values()) == 10
    for i in range(10):
        grew = server.hits[f"/pdf/paper{i}.pdf"] - hits_after_first[f"/pdf/paper{i}.pdf"]
        assert grew == (1 if i in REASONS else 0), i


def test_selection_by_term_range_and_max(scrape_env):
    from flows.scrape_conference import scrape_conference

    with BackgroundReplay(conference_server()) as url:
        scrape_env(url)
        report = asyncio.run(scrape_conference(venue="ICLR", year=2025, search_term="Attention", until="scrape",
                                               start_index=1, end_index=9, max_papers=2, batch_size=1)).scrape
    # attention papers in [1:9] are 2, 4 and 7; at most two of them
    assert report.paper_ids == ["openreview:FoRuM00002", "openreview:FoRuM00004"]
    assert sum(paper_index().counts().values()) == 2


def test_recorded_iclr_listing_through_the_flow(scrape_env):
    from flows.scrape_conference import scrape_conference

    rec = json.loads(shared_fixture(
        "openreview/openproceedings__v2_iclr-2025_notes-presentation-conference.json").read_text())
    server = ReplayServer()
    notes = rec["response"]["json"]["notes"]
    server.add_notes("or2", "ICLR.cc/2025/Conference", notes)
    for n in notes:
        server.add(n["content"]["pdf"]["value"], Canned(GOOD, content_type="application/pdf"))
    with BackgroundReplay(server) as url:
        scrape_env(url)
        report = asyncio.run(scrape_conference(venue="ICLR", year=2025, until="scrape")).scrape
    assert len(report.new) == 3 and not report.pdf_failures
    p = paper_index().get("openreview:Q6a9W6kzv5")
    assert p.extra["venue"] == "ICLR 2025 Oral" and p.pdf_key == "openreview/Q6a9W6kzv5/paper.pdf"


def test_missing_credentials_fail_the_flow_with_the_hint(scrape_env, monkeypatch):
    from flows.scrape_conference import scrape_conference

    with BackgroundReplay(conference_server()) as url:
        scrape_env(url)
        monkeypatch.delenv("ANNAPURNA_OPENREVIEW_USERNAME")
        state = asyncio.run(scrape_conference(venue="ICLR", year=2025, return_state=True, until="scrape"))
    assert state.is_failed()
    with pytest.raises(Exception, match="ChallengeRequiredError.*ANNAPURNA_OPENREVIEW_USERNAME"):
        state.result()


def test_scrape_arxiv_pages_under_the_global_rate_limit(scrape_env):
    from prefect import get_client

    from flows.scrape_arxiv import ARXIV_LIMIT, scrape_arxiv

    server = ReplayServer()
    xml = "application/atom+xml"
    with BackgroundReplay(server) as url:
        scrape_env(url)
        entries = [atom_entry(f"2611.{i:05d}", f"Fresh paper {i}", "Abstract.", ["B. Author"],
                              "2026-11-21T10:00:00Z", ["cs.LG"], f"{url}/pdf/arxiv{i}.pdf") for i in range(4)]
        server.add_arxiv_page(0, Canned(atom_feed(entries[:2], total=4, start=0), content_type=xml))
        server.add_arxiv_page(2, Canned(atom_feed(entries[2:], total=4, start=2), content_type=xml))
        for i in range(4):
            server.add(f"/pdf/arxiv{i}.pdf", Canned(GOOD, content_type="application/pdf"))
        report = asyncio.run(scrape_arxiv(max_papers=4, page_size=2, until="scrape")).scrape
    assert sorted(report.new) == [f"arxiv:2611.{i:05d}" for i in range(4)]
    times = [t for path, t in server.times if path == "/arxiv/api/query"]
    assert len(times) == 2 and times[1] - times[0] >= 2.5  # one request per 3 s (slot decay)

    async def limit():
        async with get_client() as client:
            return await client.read_global_concurrency_limit_by_name(ARXIV_LIMIT)

    gcl = asyncio.run(limit())
    assert gcl.limit == 1 and abs(gcl.slot_decay_per_second - 1 / 3) < 1e-6


def test_transient_source_errors_are_retried_and_permanent_ones_are_not(prefect_server):
    from prefect import flow, task

    from tasks.sources.http import PermanentSourceError, SourceError, retry_unless_permanent

    calls = {"transient": 0, "permanent": 0}

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_unless_permanent)
    async def failing(kind: str):
        calls[kind] += 1
        raise (PermanentSourceError if kind == "permanent" else SourceError)(f"{kind} failure")

    @flow
    async def both():
        for kind in calls:
            await failing(kind, return_state=True)

    asyncio.run(both())
    assert calls == {"transient": 3, "permanent": 1}


def test_a_truncated_arxiv_walk_tags_the_run_so_the_next_one_reads_its_window_again(scrape_env):
    """The nightly flow on a walk that arXiv cut short (a real first page, then an empty page
    while totalResults says more remain): the run completes with what it listed, records the
    truncation, and is tagged so the next run does not start its window after it."""
    from prefect import get_client

    from flows.scrape_arxiv import INCOMPLETE_TAG, last_successful_start, scrape_arxiv

    first = json.loads(shared_fixture("arxiv/q_testing_s0_m10_bc5a6c384fe9.json").read_text())["body"]
    server = ReplayServer()
    server.add_arxiv_page(0, Canned(first, content_type="application/atom+xml"))
    server.add_arxiv_page(10, Canned(atom_feed([], total=214881, start=10), content_type="application/atom+xml"))
    with BackgroundReplay(server) as url:
        scrape_env(url)
        state = asyncio.run(scrape_arxiv(max_papers=20, page_size=10, until="scrape", return_state=True))
    report = state.result().scrape
    assert report.listed == 10 and any("listing truncated at 10 of 214881" in p for p in report.problems)
    assert server.hits["/arxiv/api/query@start=10"] == 4

    async def tags_and_next_start():
        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)
        return run, await last_successful_start()

    run, start = asyncio.run(tags_and_next_start())
    assert INCOMPLETE_TAG in run.tags
    assert start != run.start_time  # the next window does not start after this run


def test_an_unreachable_arxiv_fails_the_listing_with_the_reason_instead_of_walking_on(scrape_env):
    """The nightly run's listing task against an arXiv that answers nothing but 503: the walk
    ends after one page's retries, the task fails with the reason (Prefect then retries the
    task; here its retries are off), and nothing is left Running."""
    from prefect import flow

    from flows.scrape_arxiv import ensure_arxiv_rate_limit, list_arxiv

    server = ReplayServer()
    server.add_arxiv_page(0, Canned("Service Unavailable", status=503))

    @flow
    async def nightly_listing():
        await ensure_arxiv_rate_limit()
        return await list_arxiv.with_options(retries=0)("cat:cs.LG", 50, 10)

    with BackgroundReplay(server) as url:
        scrape_env(url)
        state = asyncio.run(nightly_listing(return_state=True))
    assert state.is_failed()
    with pytest.raises(Exception, match=r"arXiv walk ended at start=0 after 1 failed page.*\(HTTP 503\)"):
        state.result()
    assert server.hits["/arxiv/api/query"] == 4  # the request's own attempts, then the end

    async def run_log() -> str:
        from prefect import get_client
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        async with get_client() as client:
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        return "\n".join(entry.message for entry in logs)

    deadline = time.monotonic() + 20  # logs reach the server in batches
    while "arXiv walk ended" not in (text := asyncio.run(run_log())) and time.monotonic() < deadline:
        time.sleep(1)
    assert "HTTP 503; attempt 2 of 4" in text and "arXiv walk ended at start=0" in text  # in the UI's run log


def test_scrape_conference_on_an_api_v1_venue_with_its_tracks(scrape_env):
    """NeurIPS 2022 through the flow, from real recorded v1 notes (main track by
    Blind_Submission, Datasets & Benchmarks by its own invitation): each paper indexed once
    with its venue, year, track and decision, its PDF fetched from the web host."""
    from flows.scrape_conference import scrape_conference
    from test_openreview import notes

    server = ReplayServer()
    main = notes("v1-neurips2022-note-accepted")
    db = notes("v1-neurips2022-notes-db-listing")
    server.add_invitation_notes("or1", "NeurIPS.cc/2022/Conference/-/Blind_Submission", main)
    server.add_invitation_notes("or1", "NeurIPS.cc/2022/Track/Datasets_and_Benchmarks/-/Submission", db)
    for note in main + db:
        server.add(note["content"]["pdf"], Canned(GOOD, content_type="application/pdf"))
    with BackgroundReplay(server) as url:
        scrape_env(url)
        report = asyncio.run(scrape_conference(venue="neurips", year=2022, source="openreview", until="scrape")).scrape
        only_db = asyncio.run(scrape_conference(venue="NeurIPS", year=2022, source="openreview",
                                                track="Datasets_and_Benchmarks", until="scrape")).scrape
    papers = {p.id: p for p in paper_index().list_papers(limit=10)}
    assert len(report.new) == 2 and len(papers) == 2 and not report.pdf_failures
    assert {(p.venue, p.year, p.extra["track"], p.extra["decision"]) for p in papers.values()} == {
        ("NeurIPS", 2022, "main", "accepted"), ("NeurIPS", 2022, "Datasets_and_Benchmarks", "accepted")}
    assert all(p.pdf_key for p in papers.values())
    assert only_db.selected == 1 and only_db.known == 1 and only_db.new == []
