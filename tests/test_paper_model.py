from datetime import datetime

import pytest
from pydantic import ValidationError

from blocks.errors import IllegalTransitionError
from blocks.paper import TRANSITIONS, Paper, PaperStatus, storage_prefix


def make(**kw) -> Paper:
    return Paper(**{"id": "arxiv:2401.12345", "source": "arxiv", "venue": "arXiv", "title": "A paper", **kw})


def test_main_line_of_the_lifecycle_is_allowed_and_timestamped():
    p = make()
    assert p.status is PaperStatus.SCRAPED and [h.status for h in p.history] == ["scraped"]
    for status in ["judged", "generated", "queued", "executed"]:
        p = p.advance(status, reason=f"to {status}")
    assert [h.status for h in p.history] == ["scraped", "judged", "generated", "queued", "executed"]
    times = [h.at for h in p.history]
    assert times == sorted(times) and all(isinstance(t, datetime) and t.tzinfo for t in times)
    assert p.history[-1].reason == "to executed" and p.updated_at == p.history[-1].at


@pytest.mark.parametrize(
    "path,bad",
    [([], "executed"), ([], "queued"), (["rejected"], "judged"), (["judged", "generated", "queued", "executed"], "queued")],
)
def test_illegal_transitions_are_refused_with_a_clear_message(path, bad):
    p = make()
    for status in path:
        p = p.advance(status)
    with pytest.raises(IllegalTransitionError) as e:
        p.advance(bad)
    assert f"cannot move from '{p.status}' to '{bad}'" in str(e.value) and p.id in str(e.value)


def test_every_status_has_a_transition_entry():
    assert set(TRANSITIONS) == set(PaperStatus)


def test_repair_loop_edges():
    p = make().advance("judged").advance("generated").advance("queued").advance("execution_failed")
    assert p.advance("generated").status == "generated"
    assert p.advance("queued").status == "queued"


def test_a_paper_without_a_title_is_a_clear_error():
    for title in ["", "   ", None]:
        with pytest.raises(ValidationError, match="paper arxiv:2401.12345 has no title"):
            make(title=title)


def test_ids_must_be_stable_and_match_their_source():
    with pytest.raises(ValidationError, match="not a stable id"):
        make(id="2401.12345")
    with pytest.raises(ValidationError, match="does not belong to source"):
        make(id="pmlr:v235/abe24a")
    assert make(id="pmlr:v235/abe24a", source="pmlr").id == "pmlr:v235/abe24a"


def test_storage_prefix():
    assert storage_prefix("arxiv:2401.12345") == "arxiv/2401.12345"
    assert storage_prefix("pmlr:v235/abe24a") == "pmlr/v235/abe24a"
    assert storage_prefix("openreview:abc-XY_1") == "openreview/abc-XY_1"


def test_round_trips_through_json():
    p = make(authors=["A", "B"], year=2024).advance("judged")
    assert Paper.model_validate_json(p.model_dump_json()) == p
