"""The real scrapers against a local aiohttp server replaying recorded responses
(../shared/fixtures) and the project's own responses in the same formats."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from conftest import shared_fixture

from deployments.demo_corpus import DEMO_PAPERS, make_pdf
from deployments.replay import Canned, RateWindow, ReplayServer, atom_entry, atom_feed, v2_note
from tasks.sources.arxiv import ArxivSource, build_query, parse_feed
from tasks.sources.http import DownloadError, Retrying, SourceError, download_pdf, new_session, request
from tasks.sources.openreview import OpenReviewSource, decision, parse_notes
from tasks.sources.pmlr import PMLRSource, parse_paper_page, parse_volume_page
from tasks.sources.proceedings import ProceedingsSource, parse_abstract_page, parse_listing
from tasks.scrape import add_details

USER, PASSWORD = "annapurna@example.org", "demo-password"
FAST = Retrying(attempts=3, backoff_s=0.01)


def recorded(relative: str) -> dict:
    return json.loads(shared_fixture(relative).read_text())


def serve(server: ReplayServer, body):
    """Run `body(session, url)` against the started server."""

    async def main():
        url = await server.start()
        try:
            async with new_session() as session:
                return await body(session, url)
        finally:
            await server.stop()

    return asyncio.run(main())


def entry(i: int) -> str:
    return atom_entry(f"2411.{i:05d}", f"Paper number {i}", f"Abstract {i}.", ["A. Author"],
                      "2026-11-20T10:00:00Z", ["cs.LG"], f"https://arxiv.org/pdf/2411.{i:05d}v1")


# -- arXiv -------------------------------------------------------------------------------
def test_arxiv_recorded_feeds_parse():
    one = parse_feed(recorded("arxiv/id_1605.08386_s0_m100_199195aa31ad.json")["body"].encode())
    assert one.total == 1 and one.papers[0].id == "arxiv:1605.08386"
    assert one.papers[0].authors == ["Caprice Stanley", "Tobias Windisch"]
    assert one.papers[0].pdf_url == "https://arxiv.org/pdf/1605.08386v1" and one.papers[0].year == 2016
    ten = parse_feed(recorded("arxiv/q_testing_s0_m10_bc5a6c384fe9.json")["body"].encode())
    assert ten.total == 214881 and len(ten.papers) == 10 and not ten.problems
    assert all(p.id.startswith("arxiv:") and p.title and p.abstract for p in ten.papers)


def test_arxiv_replayed_through_the_source_with_a_throttle_per_request():
    server = ReplayServer()
    server.add_arxiv_page(0, Canned(recorded("arxiv/q_testing_s0_m10_bc5a6c384fe9.json")["body"],
                                    content_type="application/atom+xml"))
    calls = []

    async def throttle():
        calls.append(time.monotonic())

    async def body(session, url):
        src = ArxivSource(f"{url}/arxiv/api/query", page_size=10, throttle=throttle, retrying=FAST)
        return [p async for p in src.pages(session, build_query(["cs.LG"]), max_papers=10)]

    pages = serve(server, body)
    assert len(pages) == 1 and len(pages[0].papers) == 10 and len(calls) == 1


def test_arxiv_paginates_and_a_malformed_page_is_a_problem_not_the_end():
    server = ReplayServer()
    xml = "application/atom+xml"
    server.add_arxiv_page(0, Canned(atom_feed([entry(0), entry(1)], total=7, start=0), content_type=xml))
    server.add_arxiv_page(2, Canned("<feed><entry>cut short", content_type=xml))
    server.add_arxiv_page(4, Canned(atom_feed([entry(4), entry(5)], total=7, start=4), content_type=xml))
    server.add_arxiv_page(6, Canned(atom_feed([entry(6)], total=7, start=6), content_type=xml))

    async def body(session, url):
        src = ArxivSource(f"{url}/arxiv/api/query", page_size=2, retrying=FAST)
        return [p async for p in src.pages(session, "cat:cs.LG")]

    pages = serve(server, body)
    errors = [p for p in pages if isinstance(p, SourceError)]
    papers = [x.id for p in pages if not isinstance(p, SourceError) for x in p.papers]
    assert papers == ["arxiv:2411.00000", "arxiv:2411.00001", "arxiv:2411.00004", "arxiv:2411.00005", "arxiv:2411.00006"]
    assert len(errors) == 1 and "arXiv page start=2: malformed XML" in str(errors[0])
    assert server.hits["/arxiv/api/query"] == 4


def test_arxiv_feeds_of_every_vintage_parse_by_namespace():
    old = (  # prefixed Atom, namespaces declared where used, as older feeds did
        '<?xml version="1.0" encoding="utf-8"?>\n<atom:feed xmlns:atom="http://www.w3.org/2005/Atom">'
        '<os:totalResults xmlns:os="http://a9.com/-/spec/opensearch/1.1/">1</os:totalResults>'
        "<atom:entry><atom:id>http://arxiv.org/abs/cs/0112017v1</atom:id>"
        "<atom:title>An old\n   paper</atom:title><atom:summary>Old.</atom:summary>"
        "<atom:published>2001-12-10T00:00:00Z</atom:published>"
        '<atom:link title="pdf" href="http://arxiv.org/pdf/cs/0112017v1" rel="related"/>'
        "<atom:author><atom:name>Old Author</atom:name></atom:author></atom:entry></atom:feed>"
    )
    page = parse_feed(old.encode())
    assert page.total == 1 and page.papers[0].id == "arxiv:cs/0112017" and page.papers[0].title == "An old paper"


def test_arxiv_error_feed_is_a_clear_error():
    error_feed = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        "<entry><id>http://arxiv.org/api/errors#incorrect_id_format_for_1234.1234v</id>"
        "<title>Error</title><summary>incorrect id format for 1234.1234v</summary></entry></feed>"
    )
    server = ReplayServer()
    server.add_arxiv_page(0, Canned(error_feed, status=400, content_type="application/atom+xml"))

    async def body(session, url):
        return [p async for p in ArxivSource(f"{url}/arxiv/api/query", retrying=FAST).pages(session, "id:bad")]

    pages = serve(server, body)
    assert len(pages) == 1 and isinstance(pages[0], SourceError)
    assert str(pages[0]) == "arXiv rejected the query: incorrect id format for 1234.1234v"


def test_arxiv_query_building():
    q = build_query(["cs.LG", "cs.CL"], "state space")
    assert q == '(cat:cs.LG OR cat:cs.CL) AND all:"state space"'


# -- OpenReview --------------------------------------------------------------------------
def iclr_2025_server(**kw) -> ReplayServer:
    rec = recorded("openreview/openproceedings__v2_iclr-2025_notes-presentation-conference.json")
    server = ReplayServer(**kw)
    server.add_notes("or2", "ICLR.cc/2025/Conference", rec["response"]["json"]["notes"])
    return server


def openreview(url: str, **kw) -> OpenReviewSource:
    return OpenReviewSource(v2_url=f"{url}/or2", v1_url=f"{url}/or1", web_url=url, retrying=FAST, **kw)


def test_openreview_anonymous_listing_is_refused_with_a_credentials_hint():
    async def body(session, url):
        return await openreview(url).list_venue(session, "ICLR", 2025)

    with pytest.raises(SourceError) as e:
        serve(iclr_2025_server(), body)
    assert "403 ChallengeRequiredError" in str(e.value) and "ANNAPURNA_OPENREVIEW_USERNAME" in str(e.value)


def test_openreview_recorded_listing_after_login():
    server = iclr_2025_server()

    async def body(session, url):
        return await openreview(url, username=USER, password=PASSWORD).list_venue(session, "ICLR", 2025)

    listing = serve(server, body)
    assert [p.id for p in listing.papers] == ["openreview:P42DbV2nuV", "openreview:Q6a9W6kzv5", "openreview:JZLon6cvx8"]
    p = listing.papers[0]
    assert (p.venue, p.year, p.extra["decision"], p.extra["venue"]) == ("ICLR", 2025, "accepted", "ICLR 2025 Spotlight")
    assert p.pdf_url.endswith("/pdf/8fddee1917f5289fe7908965f534e27f36e3f4db.pdf")
    assert server.hits["/or2/login"] == 1


def test_openreview_bad_credentials():
    async def body(session, url):
        return await openreview(url, username=USER, password="wrong").list_venue(session, "ICLR", 2025)

    with pytest.raises(SourceError, match="login .* refused"):
        serve(iclr_2025_server(), body)


def test_openreview_search_notes_of_every_kind_parse():
    listing = parse_notes(recorded("openreview/paper-search-pro__openreview_search_page2.json"))
    by_id = {p.id: p for p in listing.papers}
    assert len(by_id) == 7 and not listing.problems
    assert by_id["openreview:qiOqgphnVL"].extra["decision"] == "rejected"
    assert (by_id["openreview:ynRnOqI2W8"].venue, by_id["openreview:ynRnOqI2W8"].year) == ("ICML", 2026)
    assert decision("ICLR.cc/2024/Conference/Withdrawn_Submission") == "withdrawn"


def test_openreview_count_only_page_parses():
    listing = parse_notes(recorded("openreview/openproceedings__v2_iclr-2024_notes-count.json")["response"]["json"])
    assert listing.total == 2260 and listing.papers == []  # `select=id` notes have no title
    assert listing.problems and "no title" in listing.problems[0]


def generated_notes(n: int, venueid: str = "ICLR.cc/2025/Conference") -> list[dict]:
    return [v2_note(f"GeN{i:07d}", i, venueid, "ICLR 2025 Poster", f"Generated paper {i}", "An abstract.",
                    ["Gen Author"], f"/pdf/{i:040x}.pdf") for i in range(n)]


def test_openreview_paginates_in_bounded_waves_within_the_rate_limit():
    server = ReplayServer(rate=RateWindow(limit=3, window_s=1.0))
    server.add_notes("or2", "ICLR.cc/2025/Conference", generated_notes(2500))

    async def body(session, url):
        src = openreview(url, username=USER, password=PASSWORD, concurrency=2)
        t = time.monotonic()
        listing = await src.list_venue(session, "ICLR", 2025)
        return listing, time.monotonic() - t, src.budget.waited_s

    listing, elapsed, waited = serve(server, body)
    assert len(listing.papers) == 2500 and len({p.id for p in listing.papers}) == 2500
    assert listing.total == 2500 and not listing.problems
    assert server.hits["/or2/notes"] == 3 and server.rate_limited == 0  # waited instead of a 429
    assert waited > 0.5 and elapsed >= 0.9


def test_openreview_wrong_host_is_an_error_not_an_empty_venue():
    server = ReplayServer()
    server.add_notes("or2", "ICLR.cc/2023/Conference", generated_notes(3, "ICLR.cc/2023/Conference"))

    async def body(session, url):  # 2023 goes to the v1 host, which has nothing
        return await openreview(url, username=USER, password=PASSWORD).list_venue(session, "ICLR", 2023)

    with pytest.raises(SourceError, match="answered no papers for ICLR.cc/2023/Conference.*wrong API host"):
        serve(server, body)


def test_openreview_malformed_json_is_a_clear_error():
    with pytest.raises(SourceError, match="malformed JSON"):
        parse_notes(b"{not json")
    with pytest.raises(SourceError, match="malformed JSON"):
        parse_notes(b'{"notes": {"a": 1}}')


# -- PMLR, NeurIPS, MLSys ----------------------------------------------------------------
def test_pmlr_recorded_volume_and_paper_page():
    volume = recorded("pmlr/openproceedings__pmlr_v235_volume-index.json")["response"]["text"]
    page = recorded("pmlr/openproceedings__pmlr_v235_paper_abe24a.json")["response"]["text"]
    server = ReplayServer()
    server.add("/pmlr/v235/", Canned(volume))
    server.add("/pmlr/v235/abe24a.html", Canned(page))

    async def body(session, url):
        src = PMLRSource(f"{url}/pmlr")
        listing = await src.list_volume(session, 2024)
        papers = [p.model_copy(update={"url": p.url.replace("https://proceedings.mlr.press", f"{url}/pmlr")})
                  for p in listing.papers]
        problems: list[str] = []
        return listing, await add_details(session, src, papers, 2, problems), problems

    listing, detailed, problems = serve(server, body)
    assert [p.id for p in listing.papers] == ["pmlr:v235/abad-rocamora24a", "pmlr:v235/abe24a", "pmlr:v235/abhyankar24a"]
    abe = detailed[1]
    assert abe.abstract == "Synthetic abstract 4" and abe.authors[0] == "Synthetic Author 12"
    assert abe.extra["openreview_url"] == "https://openreview.net/forum?id=9U29U3cDKq"
    assert len(problems) == 2 and all("HTTP 404" in p for p in problems)  # the other pages were not recorded
    assert detailed[0].abstract == ""  # left as listed, the run went on


def test_neurips_recorded_listing():
    text = recorded("neurips/openproceedings__neurips_2024_year-index.json")["response"]["text"]
    listing = parse_listing(text, "neurips", 2024, "https://proceedings.neurips.cc")
    assert [p.id for p in listing.papers][:2] == ["neurips:000f947dcaff8fbffcc3f53a1314f358", "neurips:00295cede6e1600d344b5cd6d9fd4640"]
    assert listing.papers[2].pdf_url.endswith("013cf29a9e68e4411d0593040a8a1eb3-Paper-Datasets_and_Benchmarks_Track.pdf")
    assert listing.papers[2].extra["track"] == "Datasets_and_Benchmarks"


MLSYS_LISTING = """<!doctype html><html><body><ul class="paper-list">
<li class="conference" data-track="conference"><div class="paper-content">
<a title="paper title" href="/paper_files/paper/2024/hash/5f3b3ad5a4ed1a5e0b7c4c7f0e3cf1a2-Abstract-Conference.html">FlashInfer on a budget</a>
<span class="paper-authors">Ana Li, Bo Wu</span></div></li>
<li class="conference"><div class="paper-content"><a title="paper title" href="/not-a-paper">Broken entry</a></div></li>
</ul></body></html>"""
MLSYS_ABSTRACT = """<!doctype html><html><head>
<meta name="citation_title" content="FlashInfer on a budget"><meta name="citation_author" content="Li, Ana">
<meta name="citation_author" content="Wu, Bo">
<meta name="citation_pdf_url" content="https://proceedings.mlsys.org/paper_files/paper/2024/file/5f3b3ad5a4ed1a5e0b7c4c7f0e3cf1a2-Paper-Conference.pdf">
</head><body><h4>Abstract</h4><p class="paper-abstract"><p>Attention kernels that fit in small memory.</p></p></body></html>"""


def test_mlsys_listing_and_abstract_page_share_one_parser():
    server = ReplayServer()
    server.add("/mlsys/paper_files/paper/2024", Canned(MLSYS_LISTING))
    server.add("/mlsys/paper_files/paper/2024/hash/5f3b3ad5a4ed1a5e0b7c4c7f0e3cf1a2-Abstract-Conference.html",
               Canned(status=503), Canned(MLSYS_ABSTRACT))  # a 503, then the page

    async def body(session, url):
        src = ProceedingsSource("mlsys", f"{url}/mlsys", retrying=FAST)
        listing = await src.list_year(session, 2024)
        return listing, await add_details(session, src, listing.papers, 2, [])

    listing, detailed = serve(server, body)
    assert [p.id for p in listing.papers] == ["mlsys:5f3b3ad5a4ed1a5e0b7c4c7f0e3cf1a2"]
    assert listing.problems == ["MLSys 2024 listing: entry #1 has no abstract link with a paper hash"]
    assert detailed[0].abstract == "Attention kernels that fit in small memory."
    assert detailed[0].authors == ["Li, Ana", "Wu, Bo"] and detailed[0].venue == "MLSys"


@pytest.mark.parametrize("body", [b"", b"   ", b"\x00\x01\x02 binary"])
def test_malformed_html_is_a_clear_error(body):
    try:
        listing = parse_volume_page(body, "v235", 2024)
    except SourceError as e:
        assert "PMLR v235 volume page" in str(e)
    else:
        assert listing.papers == [] and "no div.paper blocks" in listing.problems[0]
    with pytest.raises(SourceError, match="neither"):
        parse_abstract_page("<html><body>Rate limited</body></html>")
    with pytest.raises(SourceError):
        parse_paper_page(b"")


# -- HTTP and PDFs -----------------------------------------------------------------------
GOOD = make_pdf(DEMO_PAPERS[0])


def test_429_then_success_and_give_up_with_a_reason():
    server = ReplayServer()
    server.add("/flaky", Canned(status=429, headers={"Retry-After": "0"}), Canned("ok"))
    server.add("/down", Canned(status=503))
    server.add("/gone", Canned(status=404))

    async def body(session, url):
        r = Retrying(attempts=3, backoff_s=0.01)
        ok = await request(session, "GET", f"{url}/flaky", retrying=r)
        out = [ok.text(), r.retried]
        for path in ("/down", "/gone"):
            try:
                await request(session, "GET", f"{url}{path}", retrying=Retrying(attempts=2, backoff_s=0.01))
            except SourceError as e:
                out.append(str(e))
        return out

    text, retried, down, gone = serve(server, body)
    assert (text, retried) == ("ok", 1)
    assert "gave up after 2 attempts (HTTP 503)" in down and "HTTP 404" in gone
    assert server.hits["/down"] == 2 and server.hits["/gone"] == 1


def test_pdf_download_checks():
    server = ReplayServer()
    server.add("/good.pdf", Canned(status=500), Canned(GOOD, content_type="application/pdf"))
    server.add("/page.pdf", Canned("<html>Please log in</html>"))
    server.add("/big.pdf", Canned(GOOD + b"\n%" + b"x" * 200_000, content_type="application/pdf"))

    async def body(session, url):
        out = [await download_pdf(session, f"{url}/good.pdf", retrying=FAST)]
        for path in ("/page.pdf", "/big.pdf", "/missing.pdf"):
            try:
                await download_pdf(session, f"{url}{path}", max_bytes=100_000, retrying=FAST)
            except DownloadError as e:
                out.append(str(e))
        return out

    good, page, big, missing = serve(server, body)
    assert good == GOOD
    assert "not a PDF (Content-Type text/html" in page
    assert "over the 100000-byte cap" in big
    assert "HTTP 404" in missing


PMLR_VOLUME = """<!DOCTYPE html><html><body>
<div class="paper">
  <p class="title">Sharpness-aware adapters</p>
  <p class="details"><span class="authors">Ana Li, Bo Wu</span>;
    <span class="info"><i>Proceedings of the 42nd International Conference on Machine Learning</i>, PMLR 267:1-12</span></p>
  <p class="links">[<a href="https://proceedings.mlr.press/v267/li25a.html">abs</a>][<a href="https://raw.githubusercontent.com/mlresearch/v267/main/assets/li25a/li25a.pdf">Download PDF</a>][<a href="https://openreview.net/forum?id=AbCdEf">OpenReview</a>]</p>
</div>
<div class="paper"><p class="title">No links at all</p></div>
<div class="paper"><p class="title"> </p><p class="links">[<a href="https://proceedings.mlr.press/v267/x25a.html">abs</a>]</p></div>
</body></html>"""
PMLR_PAPER = """<html><head><meta name="citation_title" content="Sharpness-aware adapters"/>
<meta name="citation_author" content="Li, Ana"><meta name="citation_author" content="Wu, Bo">
<meta name="citation_pdf_url" content="https://raw.githubusercontent.com/mlresearch/v267/main/assets/li25a/li25a.pdf"></head>
<body><div id="abstract" class="abstract">  Adapters that seek flat minima.  </div></body></html>"""


def test_pmlr_own_pages_in_the_recorded_format():
    listing = parse_volume_page(PMLR_VOLUME, "v267", 2025)
    assert [p.id for p in listing.papers] == ["pmlr:v267/li25a"]
    p = listing.papers[0]
    assert p.authors == ["Ana Li", "Bo Wu"] and p.pdf_url.endswith("/li25a.pdf") and p.year == 2025
    assert listing.problems == ["PMLR v267 volume page: paper #1 has no abs link",
                                "PMLR v267 volume page paper #2: skipped an entry: paper pmlr:v267/x25a has no title"]
    details = parse_paper_page(PMLR_PAPER)
    assert details["abstract"] == "Adapters that seek flat minima." and details["authors"] == ["Li, Ana", "Wu, Bo"]
