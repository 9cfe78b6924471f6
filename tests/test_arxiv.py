"""arXiv on real recorded feeds of every vintage (tests/fixtures/arxiv, ../shared), and a
bounded walk: a persistent failure and an empty page that should not be empty both end the
walk with a recorded reason instead of looping or stopping silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sources import FAST, recorded, serve

from deployments.replay import Canned, ReplayServer, atom_feed
from tasks.sources.arxiv import ArxivSource, WalkEnded, parse_feed
from tasks.sources.http import PermanentSourceError, SourceError

FIXTURES = Path(__file__).parent / "fixtures" / "arxiv"
XML = "application/atom+xml"


def arxiv_py(name: str) -> tuple[int, bytes]:
    """An arxiv.py capture: its recorder decoded the body as latin-1, so encode it back."""
    d = json.loads((FIXTURES / f"lukasschwab__arxiv.py__{name}.json").read_text())
    return d["status_code"], d["body"].encode("latin-1")


def test_recorded_feeds_of_2016_2020_and_2025_declare_namespaces_per_element_and_parse():
    page = parse_feed((FIXTURES / "lukasschwab__arxiv.py__2016_au_del_maestro_ANDNOT_ti_checkerboard_OR_ti_Pyrochlore.xml").read_bytes())
    assert (page.total, page.start, page.entries, len(page.papers)) == (24, 0, 10, 10) and not page.problems
    ids = [p.id for p in page.papers]
    assert "arxiv:cond-mat/0412498" in ids and "arxiv:cond-mat/0607501" in ids  # old-style ids, version dropped
    assert all(p.title and p.abstract and p.authors and p.pdf_url.startswith("http://arxiv.org/pdf/") for p in page.papers)
    assert all(p.extra["primary_category"] for p in page.papers)
    one = parse_feed((FIXTURES / "joe-antognini__zoia__2020_id_list_1601.00001.xml").read_bytes())
    assert one.total == 1 and one.papers[0].id == "arxiv:1601.00001" and one.papers[0].year == 2015  # published 2015-12-31
    ro = parse_feed((FIXTURES / "james-akl__xiv__2025_cat_cs.RO_AND_neural_max2.xml").read_bytes())
    assert ro.total == 5619 and len(ro.papers) == 2
    assert all("cs.RO" in p.extra["categories"] for p in ro.papers)


def test_recorded_2026_feeds_old_style_ids_a_title_of_zero_and_utf8_names():
    status, body = arxiv_py("id_astro-ph_0601001_oldstyle")
    page = parse_feed(body)
    assert status == 200 and page.papers[0].id == "arxiv:astro-ph/0601001"
    assert page.papers[0].extra["primary_category"] == "astro-ph"
    _, body = arxiv_py("id_2104.12255v1_title_zero")
    assert parse_feed(body).papers[0].title == "0"
    _, body = arxiv_py("id_0808.05394_1707.08567_partial")
    partial = parse_feed(body)
    assert partial.total == 1 and partial.papers[0].id == "arxiv:1707.08567"
    assert any("Wübben" in a for a in partial.papers[0].authors)
    _, body = arxiv_py("q_testing_s50_m10")
    page = parse_feed(body)
    assert (page.total, page.start, len(page.papers)) == (214881, 50, 10)


def test_recorded_error_feed_with_http_400_is_a_permanent_error():
    status, body = arxiv_py("id_abc_error_400")
    server = ReplayServer()
    server.add_arxiv_page(0, Canned(body, status=status, content_type=XML))

    async def walk(session, url):
        return [p async for p in ArxivSource(f"{url}/arxiv/api/query", retrying=FAST).pages(session, "id:abc")]

    pages = serve(server, walk)
    assert len(pages) == 1 and isinstance(pages[0], PermanentSourceError)
    assert str(pages[0]) == "arXiv rejected the query: incorrect id format for abc"


def test_recorded_empty_result_is_the_end_not_an_error():
    _, body = arxiv_py("id_0808.05394_nonexistent_empty")
    server = ReplayServer()
    server.add_arxiv_page(0, Canned(body, content_type=XML))

    async def walk(session, url):
        return [p async for p in ArxivSource(f"{url}/arxiv/api/query", retrying=FAST).pages(session, "id:0808.05394")]

    pages = serve(server, walk)
    assert len(pages) == 1 and pages[0].total == 0 and not pages[0].papers
    assert server.hits["/arxiv/api/query"] == 1


def test_an_unreachable_arxiv_ends_the_walk_after_the_request_retries():
    server = ReplayServer()
    server.add_arxiv_page(0, Canned("Service Unavailable", status=503))

    async def walk(session, url):
        return [p async for p in ArxivSource(f"{url}/arxiv/api/query", retrying=FAST).pages(session, "cat:cs.LG")]

    pages = serve(server, walk)
    assert len(pages) == 1 and isinstance(pages[0], WalkEnded)
    assert "arXiv walk ended at start=0 after 1 failed page(s) in a row; listed 0 of ?" in str(pages[0])
    assert "HTTP 503" in str(pages[0])
    assert server.hits["/arxiv/api/query"] == FAST.attempts  # one page's retries, then the end


def test_failing_pages_mid_walk_are_skipped_a_bounded_number_of_times_then_the_walk_ends():
    server = ReplayServer()
    _, first = arxiv_py("q_testing_s50_m10")  # totalResults 214881: the walk would go on for ever
    server.add_arxiv_page(0, Canned(first, content_type=XML))
    for start in (10, 20, 30, 40):
        server.add_arxiv_page(start, Canned(status=503))

    async def walk(session, url):
        src = ArxivSource(f"{url}/arxiv/api/query", page_size=10, retrying=FAST, max_failed_pages=2)
        return [p async for p in src.pages(session, "all:testing")]

    pages = serve(server, walk)
    assert [type(p).__name__ for p in pages] == ["ArxivPage", "SourceError", "SourceError", "WalkEnded"]
    assert "arXiv walk ended at start=30 after 3 failed page(s) in a row; listed 10 of 214881" in str(pages[-1])
    assert server.hits["/arxiv/api/query@start=40"] == 0


def test_an_empty_page_while_more_remain_is_asked_again_then_the_walk_goes_on():
    # arXiv's sporadic empty page has no public recording; the empty feed is built in the
    # layout of the recorded ones (tests/fixtures/README.md says so). The pages around it are real.
    first = recorded("arxiv/q_testing_s0_m10_bc5a6c384fe9.json")["body"]
    _, later = arxiv_py("q_testing_s50_m10")
    empty = atom_feed([], total=214881, start=10)
    server = ReplayServer()
    server.add_arxiv_page(0, Canned(first, content_type=XML))
    server.add_arxiv_page(10, Canned(empty, content_type=XML), Canned(empty, content_type=XML), Canned(later, content_type=XML))

    async def walk(session, url):
        src = ArxivSource(f"{url}/arxiv/api/query", page_size=10, retrying=FAST)
        return [p async for p in src.pages(session, "all:testing", max_papers=20)]

    pages = serve(server, walk)
    assert [len(p.papers) for p in pages] == [10, 10]
    assert server.hits["/arxiv/api/query@start=10"] == 3


def test_an_empty_page_that_stays_empty_truncates_the_listing_and_says_where():
    first = recorded("arxiv/q_testing_s0_m10_bc5a6c384fe9.json")["body"]
    server = ReplayServer()
    server.add_arxiv_page(0, Canned(first, content_type=XML))
    server.add_arxiv_page(10, Canned(atom_feed([], total=214881, start=10), content_type=XML))

    async def walk(session, url):
        src = ArxivSource(f"{url}/arxiv/api/query", page_size=10, retrying=FAST, empty_page_retries=3)
        return [p async for p in src.pages(session, "all:testing", max_papers=100)]

    pages = serve(server, walk)
    assert len(pages) == 2 and isinstance(pages[1], WalkEnded)
    assert str(pages[1]) == ("arXiv answered an empty page at start=10 4 times although totalResults=214881: "
                             "listing truncated at 10 of 214881")
    assert server.hits["/arxiv/api/query@start=10"] == 4


@pytest.mark.parametrize("body", ["<feed><entry>cut", "<html>Rate exceeded</html>"])
def test_a_first_page_that_is_not_a_feed_ends_the_walk(body):
    server = ReplayServer()
    server.add_arxiv_page(0, Canned(body, content_type=XML))

    async def walk(session, url):
        return [p async for p in ArxivSource(f"{url}/arxiv/api/query", retrying=FAST).pages(session, "cat:cs.LG")]

    pages = serve(server, walk)
    assert len(pages) == 1 and isinstance(pages[0], WalkEnded) and isinstance(pages[0], SourceError)
    assert server.hits["/arxiv/api/query"] == 1
