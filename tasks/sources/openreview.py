"""OpenReview: ICLR, NeurIPS and ICML submissions through the API.

Anonymous listing of `/notes` is refused (403 ChallengeRequiredError), so we log in first.
Venues from ICLR 2024 / NeurIPS 2023 / ICML 2023 on live on the v2 host; older ones on the
v1 host, and a venue id sent to the wrong host answers an empty list, which we treat as an
error. Pages are fetched in bounded waves, within the advertised `ratelimit-*` budget.
"""

from __future__ import annotations

import asyncio
import json
import time
import re
from collections.abc import Iterable
from datetime import date
from typing import NamedTuple

import aiohttp
import orjson

from tasks.sources.http import PermanentSourceError, Retrying, SourceError, request
from tasks.sources.listing import Listing

V2_URL = "https://api2.openreview.net"
V1_URL = "https://api.openreview.net"
WEB_URL = "https://openreview.net"
VENUE_GROUPS = {"ICLR": "ICLR.cc", "NEURIPS": "NeurIPS.cc", "ICML": "ICML.cc"}
FIRST_V2_YEAR = {"ICLR": 2024, "NEURIPS": 2023, "ICML": 2023}
MAX_LIMIT = 1000
#: v1 pages carry each submission's direct replies (reviews included): smaller pages keep
#: one answer to a few MB instead of tens.
V1_PAGE_SIZE = 200
ARXIV_ABS = re.compile(r"https?://(?:www\.|export\.)?arxiv\.org/abs/([^?#\s]+?)/?$")
CREDENTIALS_HINT = (
    "set ANNAPURNA_OPENREVIEW_USERNAME and ANNAPURNA_OPENREVIEW_PASSWORD "
    "(or ANNAPURNA_OPENREVIEW_PASSWORD_SECRET, the name of a saved Prefect Secret block)"
)


def venue_id(venue: str, year: int) -> str:
    group = VENUE_GROUPS.get(venue.upper())
    if not group:
        raise PermanentSourceError(f"OpenReview: unknown venue {venue!r}; known: ICLR, NeurIPS, ICML")
    # ICLR 2013-2017 were migrated to API v1 with a lower-case venue id
    lower = venue.upper() == "ICLR" and year <= 2017
    return f"{group}/{year}/{'conference' if lower else 'Conference'}"


def uses_v2(venue: str, year: int) -> bool:
    return year >= FIRST_V2_YEAR[venue.upper()]


class Listed(NamedTuple):
    """One thing to list on OpenReview: a v2 venue id or a v1 invitation, and what it is."""

    query: dict[str, str]
    track: str
    root: str  # the venue id of the track's accepted papers
    label: str | None = None  # the decision every note listed here has (withdrawn, ...)

    @property
    def v1(self) -> bool:
        """API v1 lists by invitation; v2 by `content.venueid`."""
        return "invitation" in self.query


#: Tracks besides the main one, by venue: v2 venue ids and v1 submission invitations
#: (`{g}` the venue group, `{y}` the year). A track that answers no notes is skipped.
TRACKS = {
    "NEURIPS": {
        "Datasets_and_Benchmarks": {
            "v2": ["{g}/{y}/Track/Datasets_and_Benchmarks", "{g}/{y}/Datasets_and_Benchmarks_Track"],
            "v1": ["{g}/{y}/Track/Datasets_and_Benchmarks", "{g}/{y}/Track/Datasets_and_Benchmarks/Round1",
                   "{g}/{y}/Track/Datasets_and_Benchmarks/Round2"],
        },
    },
}
MAIN = "main"


def tracks_of(venue: str) -> list[str]:
    return [MAIN, *TRACKS.get(venue.upper(), {})]


def listings(venue: str, year: int, track: str | None = None) -> list[Listed]:
    """What to list for a venue, year and track (None: every track). v2 lists each
    track's accepted venue id; v1 lists the submission invitations (every public
    submission, decided or not) and the withdrawn and desk-rejected ones."""
    v, main = venue.upper(), venue_id(venue, year)
    known = tracks_of(venue)
    if track is not None and track not in known:
        raise PermanentSourceError(f"OpenReview {venue} has no track {track!r}; known: {', '.join(known)}")
    group = VENUE_GROUPS[v]
    out: list[Listed] = []
    for name in [track] if track else known:
        if uses_v2(venue, year):
            roots = [main] if name == MAIN else [r.format(g=group, y=year) for r in TRACKS[v][name]["v2"]]
            out += [Listed({"content.venueid": r}, name, r) for r in roots]
            continue
        roots = [main] if name == MAIN else [r.format(g=group, y=year) for r in TRACKS[v][name]["v1"]]
        for r in roots:
            case = "submission" if r.endswith("/conference") else "Submission"
            out += [Listed({"invitation": f"{r}/-/Blind_{case}"}, name, r), Listed({"invitation": f"{r}/-/{case}"}, name, r),
                    Listed({"invitation": f"{r}/-/Withdrawn_Submission"}, name, r, "withdrawn"),
                    Listed({"invitation": f"{r}/-/Desk_Rejected_Submission"}, name, r, "desk_rejected")]
    return out


SUFFIXES = {"Rejected_Submission": "rejected", "Withdrawn_Submission": "withdrawn",
            "Desk_Rejected_Submission": "desk_rejected", "Submission": "submitted"}


def decision(venueid: str, root: str | None = None) -> str | None:
    """The paper's status from its v2 venue id: the track's own id means accepted; the
    suffixes say rejected, withdrawn, desk rejected or still under review."""
    if root is not None and venueid == root:
        return "accepted"
    tail = venueid.rsplit("/", 1)[-1]
    if tail in SUFFIXES:
        return SUFFIXES[tail]
    return "accepted" if tail in ("Conference", "conference") or root is None and venueid else None


def decision_from_text(text: str | None, decided: bool = True) -> str | None:
    """A decision from the words OpenReview shows: a v1 note's `venue` ("ICLR 2022
    Spotlight", "Submitted to ICLR 2023", "ICLR 2021 Conference Withdrawn Submission"),
    a decision note ("Accept (Poster)", "Reject") or ICLR 2013's codes
    ("conferencePoster-iclr2013-workshop"). "Submitted to ..." of a venue whose decisions
    are out (`decided`) is a rejection."""
    t = " ".join((text or "").lower().replace("_", " ").split())
    if not t:
        return None
    if "withdraw" in t:
        return "withdrawn"
    if "desk reject" in t:
        return "desk_rejected"
    if t.startswith("submitted to"):
        return "rejected" if decided else "submitted"
    if "no decision" in t:
        return None
    if "reject" in t:
        return "rejected"
    if "workshop" in t:
        return "workshop"
    return "accepted"


def pdf_link(pdf, web_url: str) -> str | None:
    """`/pdf/<sha>.pdf` is on the web host; an arXiv abstract page becomes its PDF."""
    if not isinstance(pdf, str) or not pdf.strip():
        return None
    pdf = pdf.strip()
    if pdf.startswith("/"):
        return web_url + pdf
    m = ARXIV_ABS.match(pdf)
    return f"https://arxiv.org/pdf/{m.group(1)}" if m else pdf


def author_list(authors) -> list[str]:
    """v1 notes of some years give authors as one comma-separated string."""
    if isinstance(authors, str):
        return [a.strip() for a in authors.split(",") if a.strip()]
    return [a for a in authors or [] if isinstance(a, str) and a.strip()]


def _value(field):
    """v2 wraps every content field as {"value": ...}; v1 does not."""
    return field.get("value") if isinstance(field, dict) and "value" in field else field


def _reply_decision(note: dict) -> str | None:
    """A v1 submission's decision from its direct replies (`details=directReplies`): a
    Decision / Acceptance_Decision note, else a Meta_Review's recommendation (ICLR 2019)."""
    replies = (note.get("details") or {}).get("directReplies") or []
    for suffix, key in (("Decision", "decision"), ("Meta_Review", "recommendation")):
        for reply in replies:
            invitation = reply.get("invitation") or " ".join(reply.get("invitations") or [])
            if invitation.endswith(suffix):
                found = decision_from_text(_value((reply.get("content") or {}).get(key)))
                if found:
                    return found
    return None


def parse_notes(body: bytes | dict, where: str = "OpenReview page", web_url: str = WEB_URL,
                listed: Listed | None = None, venue: str | None = None, year: int | None = None,
                decided: bool = True) -> Listing:
    """A `/notes` response (v1 or v2 shape) -> papers, each with its decision and track.
    `venue` and `year` are those of the request: v1 notes of most years carry neither."""
    try:
        data = orjson.loads(body) if isinstance(body, (bytes, str)) else body
        notes = data["notes"]
        if not isinstance(notes, list):
            raise TypeError("'notes' is not a list")
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as e:
        raise SourceError(f"{where}: malformed JSON ({type(e).__name__}: {e})") from None
    listing = Listing(total=data.get("count") if isinstance(data.get("count"), int) else None)
    for note in notes:
        if not isinstance(note, dict):
            listing.problems.append(f"{where}: skipped an entry that is not a note")
            continue
        content = note.get("content") if isinstance(note.get("content"), dict) else {}

        def get(key: str):
            return _value(content.get(key))

        vid = get("venueid") or note.get("domain") or ""
        vid = vid if isinstance(vid, str) else ""
        group, _, rest = vid.partition("/")
        note_year = rest.split("/", 1)[0]
        forum = note.get("forum") or note.get("id")
        invitations = [note.get("invitation") or "", *(note.get("invitations") or [])]
        status = (listed.label if listed and listed.label else
                  next((SUFFIXES[k] for k in ("Withdrawn_Submission", "Desk_Rejected_Submission")
                        if any(i.endswith("/-/" + k) for i in invitations)), None))
        if status is None and listed and listed.v1:  # v1: the venue's words, replies
            status = (decision_from_text(get("venue"), decided) or decision_from_text(get("decision"), decided)
                      or _reply_decision(note))
        if status is None and vid:
            status = decision(vid, listed.root if listed else None)
        listing.add(
            where,
            id=f"openreview:{forum}",
            source="openreview",
            venue=venue or group.removesuffix(".cc") or "OpenReview",
            year=year or (int(note_year) if note_year.isdigit() else None),
            title=get("title") or "",
            authors=author_list(get("authors")),
            abstract=get("abstract") or "",
            url=f"{web_url}/forum?id={forum}",
            pdf_url=pdf_link(get("pdf"), web_url),
            extra={
                "venueid": vid or (listed.root if listed else None),
                "venue": get("venue"),
                "decision": status,
                "track": listed.track if listed else MAIN,
                "keywords": get("keywords") or [],
                "number": note.get("number"),
            },
        )
    return listing


class RateBudget:
    """The server's advertised budget (`ratelimit-remaining`, `ratelimit-reset`): a
    request waits for the window to reset rather than spend what is not there."""

    def __init__(self) -> None:
        self.remaining: int | None = None
        self.reset_at = 0.0
        self.waited_s = 0.0
        self._lock = asyncio.Lock()

    def update(self, headers: dict[str, str]) -> None:
        h = {k.lower(): v for k, v in headers.items()}
        try:
            remaining = int(h["ratelimit-remaining"])
            reset = float(h.get("ratelimit-reset", "60"))
        except (KeyError, ValueError):
            return
        reset_at = reset if reset > 1e9 else time.time() + reset  # epoch or delta seconds
        self.remaining = remaining if self.remaining is None else min(self.remaining, remaining)
        self.reset_at = max(self.reset_at, reset_at)

    async def spend(self) -> None:
        async with self._lock:
            if self.remaining is not None and self.remaining <= 0:
                wait = max(0.0, self.reset_at - time.time())
                self.waited_s += wait
                await asyncio.sleep(wait)
                self.remaining = None
            if self.remaining is not None:
                self.remaining -= 1


class OpenReviewSource:
    def __init__(
        self,
        v2_url: str = V2_URL,
        v1_url: str = V1_URL,
        web_url: str = WEB_URL,
        username: str | None = None,
        password: str | None = None,
        page_size: int = MAX_LIMIT,
        concurrency: int = 4,
        retrying: Retrying | None = None,
    ):
        if not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"OpenReview page_size must be 1..{MAX_LIMIT}")
        self.v2_url, self.v1_url, self.web_url = v2_url.rstrip("/"), v1_url.rstrip("/"), web_url.rstrip("/")
        self.username, self.password = username, password
        self.page_size, self.concurrency = page_size, concurrency
        self.retrying = retrying or Retrying()
        self.budget = RateBudget()
        self._tokens: dict[str, str] = {}

    async def _headers(self, session: aiohttp.ClientSession, base: str) -> dict[str, str]:
        if not (self.username and self.password):
            return {}
        if base not in self._tokens:
            await self.budget.spend()
            resp = await request(session, "POST", f"{base}/login", retrying=self.retrying,
                                 json={"id": self.username, "password": self.password},
                                 ok=frozenset({200, 400, 401, 403}))
            self.budget.update(resp.headers)
            if resp.status != 200:
                raise PermanentSourceError(f"OpenReview login at {base} refused (HTTP {resp.status}); check the credentials: {CREDENTIALS_HINT}")
            self._tokens[base] = json.loads(resp.body)["token"]
        return {"Authorization": f"Bearer {self._tokens[base]}"}

    async def _page(self, session, base: str, listed: Listed, offset: int, headers: dict,
                    venue: str, year: int) -> Listing:
        what = " ".join(f"{k}={v}" for k, v in listed.query.items())
        where = f"OpenReview {what} offset={offset}"
        await self.budget.spend()
        params = {**listed.query, "limit": self._size(listed), "offset": offset, "sort": "number:asc"}
        if listed.v1:
            params["details"] = "directReplies"  # v1 decisions live in reply notes
        resp = await request(session, "GET", f"{base}/notes", headers=headers, retrying=self.retrying,
                             params=params, ok=frozenset({200, 403}))
        self.budget.update(resp.headers)
        if resp.status == 403:
            raise self._refused(what, headers, resp.body)
        kind = resp.headers.get("Content-Type", resp.headers.get("content-type", ""))
        if "html" in kind.lower() or resp.body.lstrip()[:1] == b"<":
            title = re.search(rb"<title>(.*?)</title>", resp.body, re.S | re.I)
            raise PermanentSourceError(
                f"OpenReview challenged the request for {what} (HTTP {resp.status}, an HTML page "
                f"{(title.group(1).decode(errors='replace').strip() if title else 'without a title')!r} instead of JSON): "
                f"it wants a browser check, which a scraper cannot pass; log in ({CREDENTIALS_HINT}) or try later"
            )
        return parse_notes(resp.body, where, self.web_url, listed, venue=venue, year=year,
                           decided=year < date.today().year)

    def _refused(self, what: str, headers: dict, body: bytes) -> SourceError:
        try:
            err = orjson.loads(body)
            name, message = err.get("name", "?"), err.get("message", "")
        except (orjson.JSONDecodeError, AttributeError):
            name, message = "?", body[:200].decode(errors="replace")
        if not headers:
            return PermanentSourceError(f"OpenReview refused to list {what} (403 {name}): anonymous listing is "
                                        f"not allowed; {CREDENTIALS_HINT}")
        return PermanentSourceError(f"OpenReview refused to list {what} although we logged in as {self.username} "
                                    f"(403 {name}: {message}); the account may lack access, or OpenReview is "
                                    "challenging this address")

    def _size(self, listed: Listed) -> int:
        return min(self.page_size, V1_PAGE_SIZE) if listed.v1 else self.page_size

    async def _walk(self, session, base: str, listed: Listed, headers: dict, venue: str, year: int) -> Listing:
        """Every page of one listing, in bounded waves within the rate budget."""
        listing, size = Listing(), self._size(listed)
        offsets: Iterable[int] = range(0, self.concurrency * size, size)
        while offsets:
            results = await asyncio.gather(
                *(self._page(session, base, listed, o, headers, venue, year) for o in offsets), return_exceptions=True
            )
            for offset, res in zip(offsets, results):
                if isinstance(res, BaseException):
                    if offset == 0 or isinstance(res, PermanentSourceError) or not isinstance(res, SourceError):
                        raise res
                    listing.problems.append(str(res))
                    continue
                listing.extend(res)
                listing.total = res.total if res.total is not None else listing.total
            done = offsets[-1] + size
            total = listing.total
            if total is not None:
                offsets = range(done, total, size)[: self.concurrency]
            elif all(not isinstance(r, BaseException) and len(r.papers) == size for r in results):
                offsets = range(done, done + self.concurrency * size, size)
            else:
                offsets = range(0)
        return listing

    async def list_venue(self, session: aiohttp.ClientSession, venue: str, year: int,
                         track: str | None = None) -> Listing:
        """Every paper of a venue and year on OpenReview, each track (or one), each paper
        once, with its decision and track; see `listings` for what is asked."""
        base = self.v2_url if uses_v2(venue, year) else self.v1_url
        plan = listings(venue, year, track)
        headers = await self._headers(session, base)
        listing, seen, found = Listing(), {}, set()
        for listed in plan:
            if listed.label is None and listed.root in found:
                continue  # this track's submissions came from its Blind_Submission invitation
            try:
                part = await self._walk(session, base, listed, headers, venue, year)
            except PermanentSourceError:
                raise
            except SourceError as e:  # e.g. an invitation this year does not have
                listing.problems.append(str(e))
                continue
            listing.problems += part.problems
            if part.papers and listed.label is None:
                found.add(listed.root)
            for paper in part.papers:
                if paper.id in seen:  # a withdrawn twin replaces the submission it withdrew
                    if listed.label:
                        listing.papers[seen[paper.id]] = paper
                    continue
                seen[paper.id] = len(listing.papers)
                listing.papers.append(paper)
        listing.total = len(listing.papers)
        if track in (None, MAIN) and not any(p.extra.get("track") == MAIN for p in listing.papers):
            other = "v1 (api.openreview.net)" if base == self.v2_url else "v2 (api2.openreview.net)"
            raise PermanentSourceError(
                f"OpenReview {base} answered no papers for {venue_id(venue, year)}. A venue id sent to the wrong "
                f"API host answers an empty list: is {year} on the {other} host, or not yet published?"
                + (f" ({'; '.join(listing.problems[:3])})" if listing.problems else "")
            )
        if not listing.papers:
            listing.problems.append(f"OpenReview {venue} {year}: no papers in track {track}")
        return listing
