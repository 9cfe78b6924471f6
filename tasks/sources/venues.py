"""Which source serves a venue and year, and each source client built from settings.

| venue   | years        | default source                      | also possible             |
|---------|--------------|-------------------------------------|---------------------------|
| ICLR    | 2013-2023    | OpenReview v1 (api.openreview.net)  |                           |
| ICLR    | 2024+        | OpenReview v2 (api2.openreview.net) |                           |
| ICML    | 2013-2022    | PMLR volume                         |                           |
| ICML    | 2023+        | OpenReview v2                       | PMLR (once the volume is out) |
| NeurIPS | 1987-2022    | NeurIPS proceedings                 |                           |
| NeurIPS | 2023+        | OpenReview v2                       | NeurIPS proceedings       |
| MLSys   | 2019+        | MLSys proceedings                   |                           |
"""

from __future__ import annotations

from typing import Literal

from blocks.settings import Settings, openreview_password
from tasks.sources.http import SourceError
from tasks.sources.openreview import FIRST_V2_YEAR, OpenReviewSource
from tasks.sources.pmlr import ICML_VOLUMES, PMLRSource
from tasks.sources.proceedings import ProceedingsSource

SourceName = Literal["openreview", "pmlr", "neurips", "mlsys"]
VENUES = {"ICLR": "ICLR", "ICML": "ICML", "NEURIPS": "NeurIPS", "MLSYS": "MLSys"}


def canonical_venue(venue: str) -> str:
    try:
        return VENUES[venue.upper()]
    except KeyError:
        raise SourceError(f"unknown venue {venue!r}; known: {', '.join(VENUES.values())}") from None


def route(venue: str, year: int, prefer: str | None = None) -> SourceName:
    """The source for a venue and year (see the table above); `prefer` picks an alternative."""
    v = canonical_venue(venue)
    possible: list[SourceName]
    if v == "ICLR":
        possible = ["openreview"]
    elif v == "ICML":
        possible = (["openreview"] if year >= FIRST_V2_YEAR["ICML"] else []) + (["pmlr"] if year in ICML_VOLUMES else [])
    elif v == "NeurIPS":
        possible = (["openreview"] if year >= FIRST_V2_YEAR["NEURIPS"] else []) + ["neurips"]
    else:
        possible = ["mlsys"] if year >= 2019 else []
    if prefer:
        prefer = "neurips" if prefer == "proceedings" and v == "NeurIPS" else "mlsys" if prefer == "proceedings" else prefer
        if prefer not in possible:
            raise SourceError(f"{v} {year} is not served by {prefer!r}; possible: {possible or 'none'}")
        return prefer  # type: ignore[return-value]
    if not possible:
        raise SourceError(f"no source serves {v} {year}")
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
