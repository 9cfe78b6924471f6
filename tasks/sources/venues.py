"""Which source serves a venue and year, and each source client built from settings.

| venue   | years        | default source                      | also possible             |
|---------|--------------|-------------------------------------|---------------------------|
| ICLR    | 2013-2023    | OpenReview v1 (api.openreview.net)  |                           |
| ICLR    | 2024+        | OpenReview v2 (api2.openreview.net) |                           |
| ICML    | 2013-2022    | PMLR volume                         |                           |
| ICML    | 2023+        | OpenReview v2                       | PMLR (once the volume is out) |
| NeurIPS | 1987-2022    | NeurIPS proceedings                 | OpenReview v1 (2021-2022) |
| NeurIPS | 2023+        | OpenReview v2                       | NeurIPS proceedings       |
| MLSys   | 2019+        | MLSys proceedings                   |                           |
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from blocks.settings import Settings, openreview_password
from tasks.sources.http import PermanentSourceError
from tasks.sources.openreview import FIRST_V2_YEAR, OpenReviewSource
from tasks.sources.pmlr import ICML_VOLUMES, PMLRSource
from tasks.sources.proceedings import ProceedingsSource

SourceName = Literal["openreview", "pmlr", "neurips", "mlsys"]
VENUES = {"ICLR": "ICLR", "ICML": "ICML", "NEURIPS": "NeurIPS", "MLSYS": "MLSys"}


def canonical_venue(venue: str) -> str:
    try:
        return VENUES[venue.upper()]
    except KeyError:
        raise PermanentSourceError(f"unknown venue {venue!r}; known: {', '.join(VENUES.values())}, or arxiv") from None


#: The first year each venue has papers where we list them; OpenReview lists next year's
#: submissions before that conference takes place (ICLR 2027's in the autumn of 2026).
FIRST_YEAR = {"ICLR": 2013, "ICML": min(ICML_VOLUMES), "NeurIPS": 1987, "MLSys": 2019}
SOURCES = ("openreview", "pmlr", "proceedings", "neurips", "mlsys")
FIRST_OPENREVIEW_NEURIPS = 2021  # 2021-2022 on API v1, main and Datasets & Benchmarks tracks


def route(venue: str, year: int, prefer: str | None = None) -> SourceName:
    """The source for a venue and year (see the table above); `prefer` picks an alternative.
    Raises a one-line SourceError for a venue, year or source that nothing serves, before
    any network call."""
    v = canonical_venue(venue)
    this_year = date.today().year
    if not isinstance(year, int) or not FIRST_YEAR[v] <= year <= this_year + 1:
        raise PermanentSourceError(f"{v} {year}: no such year; {v} is listed from {FIRST_YEAR[v]} to {this_year + 1}")
    if prefer and prefer not in SOURCES:
        raise PermanentSourceError(f"unknown source {prefer!r}; known: {', '.join(SOURCES)}")
    published = year <= this_year  # proceedings appear after the conference
    possible: list[SourceName]
    if v == "ICLR":
        possible = ["openreview"]
    elif v == "ICML":
        possible = (["openreview"] if year >= FIRST_V2_YEAR["ICML"] else []) + (["pmlr"] if year in ICML_VOLUMES else [])
    elif v == "NeurIPS":
        on_openreview = ["openreview"] if year >= FIRST_OPENREVIEW_NEURIPS else []
        possible = on_openreview + (["neurips"] if published else [])
        possible = possible if year >= FIRST_V2_YEAR["NEURIPS"] else possible[::-1]  # proceedings first before v2
    else:
        possible = ["mlsys"]
    if prefer:
        prefer = "neurips" if prefer == "proceedings" and v == "NeurIPS" else "mlsys" if prefer == "proceedings" else prefer
        if prefer not in possible:
            raise PermanentSourceError(f"{v} {year} is not served by {prefer!r}; possible: {', '.join(possible) or 'none'}")
        return prefer  # type: ignore[return-value]
    if not possible:
        raise PermanentSourceError(f"no source serves {v} {year}")
    return possible[0]


def openreview_source(s: Settings) -> OpenReviewSource:
    return OpenReviewSource(
        v2_url=s.openreview_url, v1_url=s.openreview_v1_url, web_url=s.openreview_web_url,
        username=s.openreview_username, password=openreview_password(s),
        concurrency=s.download_concurrency,
    )


def proceedings_source(name: SourceName, s: Settings) -> PMLRSource | ProceedingsSource:
    if name == "pmlr":
        return PMLRSource(s.pmlr_url)
    return ProceedingsSource(name, s.neurips_url if name == "neurips" else s.mlsys_url)
