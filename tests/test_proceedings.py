"""NeurIPS / MLSys proceedings and PMLR on real recorded pages (tests/fixtures/proceedings,
tests/fixtures/pmlr: captures by uw-share-lab/openproceedings, free text scrubbed by them,
markup, links and the bare-`<` shapes real), replayed through the real clients: every
track token, the track an abstract page names, abstracts with a bare `<`, and every detail
request going to the configured base URL."""

from __future__ import annotations

from pathlib import Path

from test_sources import FAST, serve

from deployments.replay import Canned, ReplayServer
from tasks.scrape import add_details
from tasks.sources.pmlr import PMLRSource, parse_paper_page, parse_volume_page
from tasks.sources.proceedings import ProceedingsSource, parse_abstract_page, parse_listing, track_name

HERE = Path(__file__).parent / "fixtures"


def page(folder: str, name: str) -> str:
    return (HERE / folder / f"uw-share-lab__openproceedings__{name}.html").read_text()


def test_track_tokens_of_every_vintage_are_read_and_named():
    db = parse_listing(page("proceedings", "neurips-2021-db-host-year-index"), "neurips", 2021, "https://p.test")
    assert len(db.papers) == 4 and not db.problems  # -Abstract-round1/-round2.html: 0 papers before
    assert [p.extra["track_token"] for p in db.papers] == ["round1", "round2", "round2", "round1"]
    assert {p.extra["track"] for p in db.papers} == {"Datasets_and_Benchmarks"}
    assert all(p.authors for p in db.papers)  # authors in <i> on this page
    assert db.papers[0].pdf_url == "https://p.test/paper_files/paper/2021/file/013d407166ec4fa56eb1e1f8cbe183b9-Paper-round1.pdf"
    old = parse_listing(page("proceedings", "neurips-2013-year-index"), "neurips", 2013, "https://p.test")
    assert len(old.papers) == 2 and {p.extra["track"] for p in old.papers} == {"main"}
    vol = parse_listing(page("proceedings", "neurips-2025-vol38-main-conference"), "neurips", 2025, "https://p.test")
    assert [p.extra["track"] for p in vol.papers] == ["main", "main", "Datasets_and_Benchmarks",
                                                      "Datasets_and_Benchmarks", "Position_Paper", "Position_Paper"]
    assert track_name("mlsys2023") == track_name("Conference") == track_name("Main Conference Track") == "main"
    assert track_name("Creative_AI_Track") == "Creative_AI"


def test_mlsys_2023_track_token_on_a_page_built_from_the_site_structure():
    # No recorded MLSys page exists (tests/fixtures/README.md): this listing is the NeurIPS
    # site software's `ul.paper-list > li` shape with MLSys 2023's documented link token.
    html = ('<html><body><ul class="paper-list"><li class="conference" data-track="conference">'
            '<a title="paper title" href="/paper_files/paper/2023/hash/0123456789abcdef0123456789abcdef-Abstract-mlsys2023.html">'
            'Sparse kernels</a> <span class="paper-authors">A. Author, B. Author</span></li></ul></body></html>')
    listing = parse_listing(html, "mlsys", 2023, "https://m.test")
    assert [(p.id, p.extra["track"], p.venue) for p in listing.papers] == [
        ("mlsys:0123456789abcdef0123456789abcdef", "main", "MLSys")]
    assert listing.papers[0].pdf_url.endswith("/file/0123456789abcdef0123456789abcdef-Paper-mlsys2023.pdf")


def test_abstracts_with_a_bare_less_than_keep_it_and_stop_at_their_container():
    bare = parse_abstract_page(page("proceedings", "neurips-2024-abstract-bare-lt"))
    text = bare["abstract"]
    for kept in ("when $W<d$.", "if a<b and c>d then", "$1<p\\le2$ and $k<n$", "called <projektor> that predicts",
                 "<human, action, object> triplets", "synthetic emphasis stays markup",
                 "Code: <https://github.com/synthetic/repo>.", "Synthetic closing sentence."):
        assert kept in text, kept
    assert text.endswith("Synthetic closing sentence.") and "DOI" not in text and "<em>" not in text
    assert bare["track"] == "main"
    db = parse_abstract_page(page("proceedings", "neurips-2024-abstract-db-track"), base_url="https://mirror.test")
    assert db["abstract"] == "Synthetic abstract 1" and db["track"] == "Datasets_and_Benchmarks"
    assert db["pdf_url"].startswith("https://mirror.test/paper_files/paper/2024/file/")
    assert parse_abstract_page(page("proceedings", "neurips-2013-abstract"))["abstract"] == "Synthetic abstract 1"
    assert parse_abstract_page(page("proceedings", "neurips-1987-abstract"))["abstract"] == "Synthetic abstract 5"
    pmlr = parse_paper_page(page("pmlr", "pmlr-v202-paper-bare-lt"))["abstract"]
    assert "for $2<p<\\infty$" in pmlr and "$P_T< \\! \\!<P_S$ holds" in pmlr
    assert pmlr.endswith("Synthetic closing sentence.")


def test_year_page_follows_see_also_and_filters_a_track_and_details_use_the_base_url():
    server = ReplayServer()
    server.add("/neurips/paper_files/paper/2025", Canned(page("proceedings", "neurips-2025-year-index")))
    server.add("/neurips/paper_files/paper/2025/vol38-main-conference",
               Canned(page("proceedings", "neurips-2025-vol38-main-conference")))
    for listing_entry_hash in ("0010031a1b4910aa67edbda26a705518",):
        server.add(f"/neurips/paper_files/paper/2025/hash/{listing_entry_hash}-Abstract-Conference.html",
                   Canned(page("proceedings", "neurips-2024-abstract-bare-lt")))

    async def body(session, url):
        src = ProceedingsSource("neurips", f"{url}/neurips", retrying=FAST)
        everything = await src.list_year(session, 2025)
        position = await src.list_year(session, 2025, "Position_Paper")
        problems: list[str] = []
        detailed = await add_details(session, src, everything.papers[:3], 2, problems)
        return everything, position, detailed, problems

    everything, position, detailed, problems = serve(server, body)
    tracks = [p.extra["track"] for p in everything.papers]
    assert tracks.count("Creative_AI") == 2 and tracks.count("main") == 2 and tracks.count("Position_Paper") == 2
    assert len({p.id for p in everything.papers}) == len(everything.papers) == 8
    assert {p.extra["track"] for p in position.papers} == {"Position_Paper"} and len(position.papers) == 2
    main = next(p for p in detailed if p.id == "neurips:0010031a1b4910aa67edbda26a705518")
    assert "a<b and c>d" in main.abstract and main.pdf_url.startswith(server.url)
    assert server.hits["/neurips/paper_files/paper/2025/hash/0010031a1b4910aa67edbda26a705518-Abstract-Conference.html"] == 1


def test_pmlr_volume_links_and_detail_requests_go_to_the_configured_base_url():
    vol = parse_volume_page(page("pmlr", "pmlr-v28-volume-index"), "v28", 2013, base_url="http://mirror.test/pmlr")
    assert len(vol.papers) == 3 and not vol.problems
    assert vol.papers[0].url == "http://mirror.test/pmlr/v28/sznitman13.html"
    assert vol.papers[0].pdf_url == "http://mirror.test/pmlr/v28/sznitman13.pdf"
    server = ReplayServer()
    server.add("/pmlr/v28/", Canned(page("pmlr", "pmlr-v28-volume-index")))
    server.add("/pmlr/v28/sznitman13.html", Canned(page("pmlr", "pmlr-v28-paper")))

    async def body(session, url):
        src = PMLRSource(f"{url}/pmlr", retrying=FAST)
        listing = await src.list_volume(session, 2013)
        problems: list[str] = []
        return listing, await add_details(session, src, listing.papers[:1], 1, problems), problems

    listing, detailed, problems = serve(server, body)
    assert server.hits["/pmlr/v28/sznitman13.html"] == 1 and not problems
    assert detailed[0].abstract and detailed[0].authors
    assert detailed[0].pdf_url.startswith(server.url + "/pmlr/v28/")
    v81 = parse_volume_page(page("pmlr", "pmlr-v81-volume-index"), "v81", 2018, "FAT*")
    assert len(v81.papers) == 5 and all(p.pdf_url.endswith(".pdf") for p in v81.papers)


def test_a_response_over_the_cap_is_refused_not_read_whole():
    from tasks.sources.http import PermanentSourceError, request

    server = ReplayServer()
    server.add("/big", Canned(page("proceedings", "neurips-2022-year-index")))

    async def body(session, url):
        whole = await request(session, "GET", f"{url}/big", retrying=FAST)
        try:
            await request(session, "GET", f"{url}/big", retrying=FAST, max_bytes=len(whole.body) - 1)
        except PermanentSourceError as e:
            return whole, e

    whole, refused = serve(server, body)
    assert whole.body.startswith(b"<!DOCTYPE") or b"<html" in whole.body[:500]
    assert f"response over the {len(whole.body) - 1}-byte cap" in str(refused)
    assert server.hits["/big"] == 2  # refused once, not retried
