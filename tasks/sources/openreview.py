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
from collections.abc import Iterable

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
CREDENTIALS_HINT = (
    "set ANNAPURNA_OPENREVIEW_USERNAME and ANNAPURNA_OPENREVIEW_PASSWORD "
    "(or ANNAPURNA_OPENREVIEW_PASSWORD_SECRET, the name of a saved Prefect Secret block)"
)


def venue_id(venue: str, year: int) -> str:
    group = VENUE_GROUPS.get(venue.upper())
    if not group:
        raise PermanentSourceError(f"OpenReview: unknown venue {venue!r}; known: ICLR, NeurIPS, ICML")
    return f"{group}/{year}/Conference"


def uses_v2(venue: str, year: int) -> bool:
    return year >= FIRST_V2_YEAR[venue.upper()]


def decision(venueid: str) -> str:
    """The paper's status, read from the suffix of its venue id."""
    tail = venueid.rsplit("/", 1)[-1]
    return {
        "Conference": "accepted",
        "Rejected_Submission": "rejected",
        "Withdrawn_Submission": "withdrawn",
        "Desk_Rejected_Submission": "desk_rejected",
        "Submission": "submitted",
    }.get(tail, tail.lower())


def _value(field):
    """v2 wraps every content field as {"value": ...}; v1 does not."""
    return field.get("value") if isinstance(field, dict) and "value" in field else field


def parse_notes(body: bytes | dict, where: str = "OpenReview page", web_url: str = WEB_URL) -> Listing:
    """A `/notes` response (v1 or v2 shape) -> papers."""
    try:
        data = orjson.loads(body) if isinstance(body, (bytes, str)) else body
        notes = data["notes"]
        if not isinstance(notes, list):
            raise TypeError("'notes' is not a list")
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as e:
        raise SourceError(f"{where}: malformed JSON ({type(e).__name__}: {e})") from None
    listing = Listing(total=data.get("count"))
    for note in notes:
        content = note.get("content") or {}

        def get(key: str):
            return _value(content.get(key))

        vid = get("venueid") or note.get("domain") or ""
        group, _, rest = vid.partition("/")
        year = rest.split("/", 1)[0]
        pdf = get("pdf")
        forum = note.get("forum") or note.get("id")
        listing.add(
            where,
            id=f"openreview:{forum}",
            source="openreview",
            venue=group.removesuffix(".cc") or "OpenReview",
            year=int(year) if year.isdigit() else None,
            title=get("title") or "",
            authors=get("authors") or [],
            abstract=get("abstract") or "",
            url=f"{web_url}/forum?id={forum}",
            pdf_url=(web_url + pdf if isinstance(pdf, str) and pdf.startswith("/") else pdf),
            extra={
                "venueid": vid,
                "venue": get("venue"),
                "decision": decision(vid) if vid else None,
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

    async def _page(self, session, base: str, vid: str, offset: int, headers: dict) -> Listing:
        where = f"OpenReview {vid} offset={offset}"
        await self.budget.spend()
        resp = await request(
            session, "GET", f"{base}/notes", headers=headers, retrying=self.retrying,
            params={"content.venueid": vid, "limit": self.page_size, "offset": offset, "sort": "number:asc"},
            ok=frozenset({200, 403}),
        )
        self.budget.update(resp.headers)
        if resp.status == 403:
            if b"ChallengeRequired" in resp.body:
                raise PermanentSourceError(f"OpenReview refused to list {vid} (403 ChallengeRequiredError): "
                                  f"anonymous listing is not allowed; {CREDENTIALS_HINT}")
            raise SourceError(f"{where}: HTTP 403 {resp.body[:200]!r}")
        return parse_notes(resp.body, where, self.web_url)

    async def list_venue(self, session: aiohttp.ClientSession, venue: str, year: int) -> Listing:
        """Every accepted paper of a venue and year, in submission-number order."""
        vid = venue_id(venue, year)
        base = self.v2_url if uses_v2(venue, year) else self.v1_url
        headers = await self._headers(session, base)
        listing = Listing()
        offsets: Iterable[int] = range(0, self.concurrency * self.page_size, self.page_size)
        while offsets:
            results = await asyncio.gather(
                *(self._page(session, base, vid, o, headers) for o in offsets), return_exceptions=True
            )
            for offset, res in zip(offsets, results):
                if isinstance(res, BaseException):
                    if offset == 0 or "ChallengeRequired" in str(res) or not isinstance(res, SourceError):
                        raise res
                    listing.problems.append(str(res))
                    continue
                listing.extend(res)
                listing.total = res.total if res.total is not None else listing.total
            first = results[0]
            if offsets[0] == 0 and not isinstance(first, BaseException) and not first.papers:
                other = "v1 (api.openreview.net)" if base == self.v2_url else "v2 (api2.openreview.net)"
                raise PermanentSourceError(
                    f"OpenReview {base} answered no papers for {vid}. A venue id sent to the wrong API "
                    f"host answers an empty list: is {year} on the {other} host, or not yet published?"
                )
            done = offsets[-1] + self.page_size
            total = listing.total
            if total is not None:
                offsets = range(done, total, self.page_size)[: self.concurrency]
            elif all(not isinstance(r, BaseException) and len(r.papers) == self.page_size for r in results):
                offsets = range(done, done + self.concurrency * self.page_size, self.page_size)
            else:
                offsets = range(0)
        return listing
