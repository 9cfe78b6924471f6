"""OpenReview on real recorded notes (tests/fixtures/openreview: captures from
api.openreview.net and api2.openreview.net by uw-share-lab/openproceedings, free text
scrubbed by them), replayed through the real client: API v1 venues listed by invitation,
string authors, decisions from venue text and reply notes, arXiv PDF links, the 2017
lower-case venue id, every track, challenge pages and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sources import FAST, PASSWORD, USER, serve

from deployments.replay import Canned, ReplayServer
from tasks.sources.http import PermanentSourceError
from tasks.sources.openreview import OpenReviewSource, decision_from_text, listings, parse_notes

FIXTURES = Path(__file__).parent / "fixtures" / "openreview"


def capture(name: str) -> dict:
    return json.loads((FIXTURES / f"uw-share-lab__openproceedings__{name}.json").read_text())


def notes(name: str) -> list[dict]:
    return capture(name)["response"]["json"]["notes"]


def source(url: str) -> OpenReviewSource:
    return OpenReviewSource(v2_url=f"{url}/or2", v1_url=f"{url}/or1", web_url=url, username=USER, password=PASSWORD,
                            retrying=FAST)


def listed(server: ReplayServer, venue: str, year: int, track: str | None = None):
    async def body(session, url):
        return await source(url).list_venue(session, venue, year, track)

    return serve(server, body)


def forum(name: str) -> tuple[dict, list[dict]]:
    """A recorded `/notes?forum=` answer -> the submission, with its replies as the
    `details.directReplies` that a `details=directReplies` listing carries."""
    found = notes(name)
    submission = next(n for n in found if n["id"] == n["forum"])
    replies = [n for n in found if n.get("replyto") == submission["id"]]
    return {**submission, "details": {"directReplies": replies}}, replies


def test_iclr_2017_lower_case_venue_id_string_authors_and_venue_text_decisions():
    server = ReplayServer()
    inv = "ICLR.cc/2017/conference/-/submission"
    assert capture("v1-iclr2017-notes-conference-authors-string")["request"]["url"].endswith(
        f"invitation={inv}&limit=1000&offset=0")
    server.add_invitation_notes("or1", inv, notes("v1-iclr2017-notes-conference-authors-string")
                                + notes("v1-iclr2017-notes-conference-listing") + notes("v1-iclr2017-note-invite-to-workshop"))
    listing = listed(server, "ICLR", 2017)
    by_id = {p.id: p for p in listing.papers}
    string_authors = by_id["openreview:S1HEBe_Jl"]
    assert string_authors.authors == ["Synthetic Author 6", "Synthetic Author 7"]
    assert (string_authors.venue, string_authors.year) == ("ICLR", 2017)
    assert string_authors.extra["decision"] == "rejected"  # "Submitted to ICLR 2017"
    assert string_authors.pdf_url == f"{server.url}/pdf/2caad8143d962dd837f7ea1a54b95aba2b12993a.pdf"
    decisions = sorted(p.extra["decision"] for p in listing.papers)
    assert decisions == ["accepted", "rejected", "workshop"]
    assert all(p.extra["track"] == "main" for p in listing.papers)
    # 2017 has no Blind_Submission: asked, answered empty, then the lower-case submission invitation
    assert server.hits["/or1/notes"] >= 2 and len(listing.papers) == 3


def test_iclr_2013_arxiv_abstract_links_become_arxiv_pdfs():
    server = ReplayServer()
    server.add_invitation_notes("or1", "ICLR.cc/2013/conference/-/submission", notes("v1-iclr2013-notes-submission-arxiv-pdf"))
    paper = listed(server, "ICLR", 2013).papers[0]
    assert paper.pdf_url == "https://arxiv.org/pdf/1301.3618"
    assert paper.extra["decision"] == "workshop"  # "conferencePoster-iclr2013-workshop"
    assert paper.year == 2013 and len(paper.authors) == 4


def test_iclr_2018_to_2021_blind_submissions_take_decisions_from_their_reply_notes():
    server = ReplayServer()
    rejected_2018, _ = forum("v1-iclr2018-forum-rejected")
    server.add_invitation_notes("or1", "ICLR.cc/2018/Conference/-/Blind_Submission",
                                notes("v1-iclr2018-notes-blind-listing") + [rejected_2018])
    server.add_invitation_notes("or1", "ICLR.cc/2018/Conference/-/Withdrawn_Submission",
                                notes("v1-iclr2018-notes-withdrawn-listing"))
    listing = listed(server, "ICLR", 2018)
    by_id = {p.id: p for p in listing.papers}
    assert by_id["openreview:rJLTTe-0W"].extra["decision"] == "rejected"  # Acceptance_Decision "Reject"
    blind = notes("v1-iclr2018-notes-blind-listing")[0]
    assert by_id[f"openreview:{blind['forum']}"].extra["decision"] is None  # recorded without replies: unknown, not accepted
    withdrawn = notes("v1-iclr2018-notes-withdrawn-listing")[0]
    assert by_id[f"openreview:{withdrawn['forum']}"].extra["decision"] == "withdrawn"
    assert {p.year for p in listing.papers} == {2018} and {p.venue for p in listing.papers} == {"ICLR"}

    server = ReplayServer()
    meta_2019, _ = forum("v1-iclr2019-forum-rejected-meta-review")
    server.add_invitation_notes("or1", "ICLR.cc/2019/Conference/-/Blind_Submission", [meta_2019])
    assert listed(server, "ICLR", 2019).papers[0].extra["decision"] == "rejected"  # Meta_Review recommendation

    server = ReplayServer()
    spotlight, _ = forum("v1-iclr2020-forum-accepted-spotlight")
    talk, _ = forum("v1-iclr2020-forum-accepted-talk")
    server.add_invitation_notes("or1", "ICLR.cc/2020/Conference/-/Blind_Submission", [spotlight, talk])
    server.add_invitation_notes("or1", "ICLR.cc/2020/Conference/-/Desk_Rejected_Submission",
                                notes("v1-iclr2020-notes-desk-rejected-listing"))
    listing = listed(server, "ICLR", 2020)
    assert [p.extra["decision"] for p in listing.papers] == ["accepted", "accepted", "desk_rejected"]

    server = ReplayServer()
    rejected_2021, _ = forum("v1-iclr2021-forum-rejected-no-venueid")
    server.add_invitation_notes("or1", "ICLR.cc/2021/Conference/-/Blind_Submission",
                                [rejected_2021, *notes("v1-iclr2021-note-accepted")])
    server.add_invitation_notes("or1", "ICLR.cc/2021/Conference/-/Withdrawn_Submission",
                                notes("v1-iclr2021-note-withdrawn-with-accepted-venue"))
    listing = listed(server, "ICLR", 2021)
    assert [p.extra["decision"] for p in listing.papers] == ["rejected", "accepted", "withdrawn"]


def test_iclr_2022_and_2023_venue_text_submitted_to_is_a_rejection():
    server = ReplayServer()
    server.add_invitation_notes("or1", "ICLR.cc/2023/Conference/-/Blind_Submission",
                                notes("v1-iclr2023-notes-blind-listing") + notes("v1-iclr2023-note-rejected-submitted-to"))
    server.add_invitation_notes("or1", "ICLR.cc/2023/Conference/-/Desk_Rejected_Submission",
                                notes("v1-iclr2023-note-desk-rejected"))
    listing = listed(server, "ICLR", 2023)
    assert [(p.extra["venue"], p.extra["decision"]) for p in listing.papers] == [
        ("ICLR 2023 poster", "accepted"), ("Submitted to ICLR 2023", "rejected"), (None, "desk_rejected")]
    server = ReplayServer()
    server.add_invitation_notes("or1", "ICLR.cc/2022/Conference/-/Blind_Submission",
                                notes("v1-iclr2022-notes-blind-listing") + notes("v1-iclr2022-note-withdrawn-empty-venueid"))
    listing = listed(server, "ICLR", 2022)
    assert [p.extra["decision"] for p in listing.papers] == ["accepted", "withdrawn"]


def test_neurips_v1_every_track_each_paper_labelled():
    server = ReplayServer()
    server.add_invitation_notes("or1", "NeurIPS.cc/2022/Conference/-/Blind_Submission", notes("v1-neurips2022-note-accepted"))
    server.add_invitation_notes("or1", "NeurIPS.cc/2022/Track/Datasets_and_Benchmarks/-/Submission",
                                notes("v1-neurips2022-notes-db-listing"))
    listing = listed(server, "NeurIPS", 2022)
    assert [(p.extra["track"], p.extra["decision"]) for p in listing.papers] == [
        ("main", "accepted"), ("Datasets_and_Benchmarks", "accepted")]  # "NeurIPS 2022 Datasets and Benchmarks "
    only_db = listed(server, "NeurIPS", 2022, "Datasets_and_Benchmarks")
    assert [p.extra["track"] for p in only_db.papers] == ["Datasets_and_Benchmarks"]

    server = ReplayServer()
    server.add_invitation_notes("or1", "NeurIPS.cc/2021/Conference/-/Blind_Submission", notes("v1-neurips2022-note-accepted"))
    server.add_invitation_notes("or1", "NeurIPS.cc/2021/Track/Datasets_and_Benchmarks/Round1/-/Submission",
                                notes("v1-neurips2021-note-db-round1-rejected"))
    server.add_invitation_notes("or1", "NeurIPS.cc/2021/Track/Datasets_and_Benchmarks/Round2/-/Submission",
                                notes("v1-neurips2021-note-db-round2-accepted"))
    server.add_invitation_notes("or1", "NeurIPS.cc/2021/Conference/-/Withdrawn_Submission",
                                capture("v1-neurips2021-notes-withdrawn-listing-empty")["response"]["json"]["notes"])
    db = [p for p in listed(server, "NeurIPS", 2021).papers if p.extra["track"] != "main"]
    assert [(p.extra["venueid"].rsplit("/", 1)[-1], p.extra["decision"]) for p in db] == [
        ("Round1", "rejected"), ("Round2", "accepted")]
    assert all(p.year == 2021 for p in db)


def test_neurips_v2_datasets_and_benchmarks_track_of_2023_and_2024():
    server = ReplayServer()
    server.add_notes("or2", "NeurIPS.cc/2023/Conference", [])
    server.add_notes("or2", "NeurIPS.cc/2023/Track/Datasets_and_Benchmarks",
                     notes("v2-neurips2023-notes-db-presentation-listing"))
    with pytest.raises(PermanentSourceError, match="answered no papers for NeurIPS.cc/2023/Conference"):
        listed(server, "NeurIPS", 2023)  # no main track: a wrong host, said so
    db = listed(server, "NeurIPS", 2023, "Datasets_and_Benchmarks").papers
    assert len(db) == 3 and all(p.extra["decision"] == "accepted" and p.extra["track"] == "Datasets_and_Benchmarks"
                                for p in db)
    server = ReplayServer()
    server.add_notes("or2", "NeurIPS.cc/2024/Conference", notes("v2-neurips2023-notes-db-track"))
    server.add_notes("or2", "NeurIPS.cc/2024/Datasets_and_Benchmarks_Track", notes("v2-neurips2024-notes-db"))
    listing = listed(server, "NeurIPS", 2024)
    assert [p.extra["track"] for p in listing.papers] == ["main", "Datasets_and_Benchmarks"]
    assert listing.papers[1].extra["venue"] == "NeurIPS 2024 Track Datasets and Benchmarks Poster"
    assert listing.papers[1].extra["decision"] == "accepted"


def test_v2_rejected_withdrawn_and_desk_rejected_notes_are_labelled():
    root = "ICLR.cc/2024/Conference"
    cases = {"v2-iclr2024-notes-rejected": "rejected", "v2-iclr2024-notes-withdrawn": "withdrawn",
             "v2-iclr2024-notes-desk-rejected": "desk_rejected", "v2-neurips2024-notes-db-rejected": "rejected"}
    for name, expected in cases.items():
        listing = parse_notes(capture(name)["response"]["json"], name, "https://openreview.net")
        assert [p.extra["decision"] for p in listing.papers] == [expected], name
    desk = parse_notes(capture("v2-iclr2024-notes-desk-rejected")["response"]["json"]).papers[0]
    assert desk.pdf_url is None and desk.year == 2024 and root in desk.extra["venueid"]


def test_a_challenge_page_is_a_clear_error_not_malformed_json():
    rec = capture("v2-errors-anonymous-challenge")["response"]
    server = ReplayServer()
    server.add("/or2-challenge/login", Canned(json.dumps({"token": "t"}), content_type="application/json"))
    server.add("/or2-challenge/notes", Canned(rec["text"], status=rec["status"], content_type=rec["headers"]["content-type"]))

    async def body(session, url):
        src = OpenReviewSource(v2_url=f"{url}/or2-challenge", username=USER, password=PASSWORD, retrying=FAST)
        return await src.list_venue(session, "ICLR", 2025)

    with pytest.raises(PermanentSourceError) as e:
        serve(server, body)
    assert "OpenReview challenged the request for content.venueid=ICLR.cc/2025/Conference (HTTP 200" in str(e.value)
    assert "'Verifying your browser | OpenReview'" in str(e.value) and "malformed" not in str(e.value)
    assert server.hits["/or2-challenge/notes"] == 4  # the first wave's 4 pages, each asked once: not retried


def test_a_cloudflare_challenge_page_is_named_too():
    page = (FIXTURES / "VeNoMouS__cloudscraper__cloudflare-managed-challenge-2021-11-02.html").read_bytes()
    server = ReplayServer()
    server.add("/cf/login", Canned(json.dumps({"token": "t"}), content_type="application/json"))
    server.add("/cf/notes", Canned(page, status=200))

    async def body(session, url):
        return await OpenReviewSource(v2_url=f"{url}/cf", username=USER, password=PASSWORD,
                                      retrying=FAST).list_venue(session, "ICLR", 2025)

    with pytest.raises(PermanentSourceError, match="challenged the request .* 'Please Wait... | Cloudflare'"):
        serve(server, body)


def test_a_403_after_login_does_not_blame_anonymous_listing():
    server = ReplayServer()
    server.add("/or2-403/login", Canned(json.dumps({"token": "t"}), content_type="application/json"))
    server.add("/or2-403/notes", Canned(json.dumps({"name": "ForbiddenError", "message": "User is not a reader",
                                                    "status": 403}), status=403, content_type="application/json"))

    async def body(session, url):
        return await OpenReviewSource(v2_url=f"{url}/or2-403", username=USER, password=PASSWORD,
                                      retrying=FAST).list_venue(session, "ICLR", 2025)

    with pytest.raises(PermanentSourceError) as e:
        serve(server, body)
    assert "although we logged in as annapurna@example.org (403 ForbiddenError: User is not a reader)" in str(e.value)
    assert "anonymous" not in str(e.value)


def test_listing_plan_and_decision_words():
    plan = listings("ICLR", 2017)
    assert plan[0].query == {"invitation": "ICLR.cc/2017/conference/-/Blind_submission"}
    assert plan[1].query == {"invitation": "ICLR.cc/2017/conference/-/submission"}
    assert [x.query for x in listings("NeurIPS", 2024, "Datasets_and_Benchmarks")] == [
        {"content.venueid": "NeurIPS.cc/2024/Track/Datasets_and_Benchmarks"},
        {"content.venueid": "NeurIPS.cc/2024/Datasets_and_Benchmarks_Track"}]
    with pytest.raises(PermanentSourceError, match="no track 'Posters'"):
        listings("ICLR", 2025, "Posters")
    assert decision_from_text("Submitted to ICLR 2027", decided=False) == "submitted"
    assert decision_from_text("ICLR 2023 notable top 5%") == "accepted"
    assert decision_from_text("ICLR 2021 Conference Withdrawn Submission") == "withdrawn"
    assert decision_from_text("ICLR 2024 Conference Desk Rejected Submission") == "desk_rejected"
    assert decision_from_text("Accept (Poster)") == "accepted" and decision_from_text("Reject") == "rejected"
