"""One contract, every paper index backend: SQLite always, OpenSearch where
OPENSEARCH_URL names a server (none can be installed on the build machine)."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from datetime import timedelta

import pytest

from blocks.errors import IllegalTransitionError, PaperIndexError, UnknownPaperError
from blocks.index import PaperIndex
from blocks.opensearch_index import OpenSearchPaperIndex
from blocks.paper import Paper, PaperStatus, utcnow
from blocks.sqlite_index import SQLitePaperIndex
from index_workers import bump, hammer, paper


@pytest.fixture(params=["sqlite", "opensearch"])
def index(request, tmp_path) -> PaperIndex:
    if request.param == "sqlite":
        yield SQLitePaperIndex(path=str(tmp_path / "index.sqlite3"))
        return
    url = os.environ.get("OPENSEARCH_URL")
    if not url:
        reason = "OPENSEARCH_URL is not set: no OpenSearch server can run on this machine"
        print(reason)
        pytest.skip(reason)
    idx = OpenSearchPaperIndex(url=url, index_name=f"research-papers-v2-test-{uuid.uuid4().hex[:8]}")
    yield idx
    idx._client().indices.delete(index=idx.index_name, ignore=404)


def test_upsert_get_and_replace(index):
    p = paper("2401.00001", "Sparse attention for long contexts")
    assert index.get(p.id) is None
    assert index.upsert([p]) == 1
    assert index.get(p.id) == p
    changed = p.model_copy(update={"abstract": "We make attention sparse."})
    index.upsert([changed])
    assert index.get(p.id).abstract == "We make attention sparse."
    assert sum(index.counts().values()) == 1


def test_add_new_never_duplicates_nor_resets(index):
    p = paper("2401.00002")
    assert index.add_new([p]) == [p.id]
    index.transition(p.id, "judged", "relevant")
    assert index.add_new([paper("2401.00002"), paper("2401.00003")]) == ["arxiv:2401.00003"]
    assert index.get(p.id).status is PaperStatus.JUDGED
    assert index.counts()[PaperStatus.SCRAPED] == 1


def test_search_is_full_text_over_title_and_abstract(index):
    index.upsert([
        paper("1", "Mixture of experts routing").model_copy(update={"abstract": "Sparse gating at scale."}),
        paper("2", "Diffusion models for audio").model_copy(update={"abstract": "Denoising waveforms."}),
        paper("3", "Routing in networks"),
    ])
    assert [p.id for p in index.search("experts")] == ["arxiv:1"]
    assert [p.id for p in index.search("denoising")] == ["arxiv:2"]  # abstract only
    assert {p.id for p in index.search("routing")} == {"arxiv:1", "arxiv:3"}
    assert index.search("routing", status=PaperStatus.JUDGED) == []
    assert index.search('"unbalanced (quote AND') == []  # user text is never query syntax
    assert index.search("   ") == []


def test_list_by_status_venue_and_time_and_counts(index):
    index.upsert([paper(str(i)) for i in range(5)])
    index.upsert([Paper(id="pmlr:v235/abe24a", source="pmlr", venue="ICML", year=2024, title="X")])
    for i in range(2):
        index.transition(f"arxiv:{i}", "rejected", "off-topic")
    assert {p.id for p in index.list_papers(status="rejected")} == {"arxiv:0", "arxiv:1"}
    assert [p.id for p in index.list_papers(venue="icml")] == ["pmlr:v235/abe24a"]
    listed = index.list_papers()
    assert [p.updated_at for p in listed] == sorted((p.updated_at for p in listed), reverse=True)
    assert len(index.list_papers(limit=2)) == 2
    assert index.list_papers(since=utcnow() + timedelta(hours=1)) == []
    counts = index.counts()
    assert set(counts) == set(PaperStatus)
    assert counts[PaperStatus.SCRAPED] == 4 and counts[PaperStatus.REJECTED] == 2


def test_transition_is_checked_and_a_failed_change_writes_nothing(index):
    p = paper("2401.00004")
    index.add_new([p])
    with pytest.raises(IllegalTransitionError):
        index.transition(p.id, "executed")

    def half_done(q: Paper) -> Paper:
        q.title = "half-written"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        index.update(p.id, half_done)
    assert index.get(p.id) == p
    with pytest.raises(UnknownPaperError, match="no paper with id 'arxiv:nope'"):
        index.transition("arxiv:nope", "judged")
    with pytest.raises(PaperIndexError, match="change its id"):
        index.update(p.id, lambda q: q.model_copy(update={"id": "arxiv:other"}))


def test_two_processes_writing_at_once_lose_nothing(index):
    index.add_new([paper("counter")])
    rounds = 150
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=hammer, args=(index, w, rounds)) for w in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    assert [w.exitcode for w in workers] == [0, 0], "a writer failed (e.g. 'database is locked')"
    assert index.get("arxiv:counter").extra["n"] == 2 * rounds  # no lost update
    assert sum(index.counts().values()) == 1 + 2 * rounds + rounds  # no duplicate, none lost
    index.update("arxiv:counter", bump)
    assert index.get("arxiv:counter").extra["n"] == 2 * rounds + 1


def test_a_corrupt_sqlite_file_is_a_clear_error(tmp_path):
    path = tmp_path / "index.sqlite3"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    with pytest.raises(PaperIndexError) as e:
        SQLitePaperIndex(path=str(path)).counts()
    assert str(path) in str(e.value) and "ANNAPURNA_SQLITE_PATH" in str(e.value)
    assert path.read_bytes().startswith(b"this is not a database")  # left as it was


def test_sqlite_uses_wal_and_fts5(tmp_path):
    import sqlite3

    idx = SQLitePaperIndex(path=str(tmp_path / "i.sqlite3"))
    idx.counts()
    conn = sqlite3.connect(tmp_path / "i.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT sql FROM sqlite_master WHERE name='papers_fts'").fetchone()[0].count("fts5")
