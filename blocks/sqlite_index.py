"""The embedded paper index: one SQLite file in WAL mode with an FTS5 table over
title and abstract. Writers from several processes serialise on `BEGIN IMMEDIATE`."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from pydantic import Field

from blocks.errors import PaperIndexError, UnknownPaperError
from blocks.index import PaperIndex
from blocks.paper import Paper, PaperStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS papers (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    venue TEXT NOT NULL,
    year INTEGER,
    title TEXT NOT NULL,
    abstract TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS papers_by_status ON papers(status, updated_at);
CREATE INDEX IF NOT EXISTS papers_by_updated ON papers(updated_at);
CREATE VIRTUAL TABLE IF NOT EXISTS papers_fts USING fts5(
    title, abstract, content='papers', content_rowid='rowid', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS papers_fts_insert AFTER INSERT ON papers BEGIN
    INSERT INTO papers_fts(rowid, title, abstract) VALUES (new.rowid, new.title, new.abstract);
END;
CREATE TRIGGER IF NOT EXISTS papers_fts_delete AFTER DELETE ON papers BEGIN
    INSERT INTO papers_fts(papers_fts, rowid, title, abstract)
    VALUES ('delete', old.rowid, old.title, old.abstract);
END;
CREATE TRIGGER IF NOT EXISTS papers_fts_update AFTER UPDATE OF title, abstract ON papers BEGIN
    INSERT INTO papers_fts(papers_fts, rowid, title, abstract)
    VALUES ('delete', old.rowid, old.title, old.abstract);
    INSERT INTO papers_fts(rowid, title, abstract) VALUES (new.rowid, new.title, new.abstract);
END;
"""

UPSERT = """
INSERT INTO papers (id, status, source, venue, year, title, abstract, created_at, updated_at, doc)
VALUES (:id, :status, :source, :venue, :year, :title, :abstract, :created_at, :updated_at, :doc)
ON CONFLICT(id) DO {action}
"""
REPLACE = UPSERT.format(
    action="""UPDATE SET status=excluded.status, source=excluded.source, venue=excluded.venue,
    year=excluded.year, title=excluded.title, abstract=excluded.abstract,
    updated_at=excluded.updated_at, doc=excluded.doc"""
)
INSERT_NEW = UPSERT.format(action="NOTHING")

# Connections are per process and per thread (sqlite3 objects are neither fork- nor
# thread-safe); kept outside the block so the block stays a plain, picklable model.
_local = threading.local()


def _row(paper: Paper) -> dict:
    return {
        "id": paper.id,
        "status": paper.status.value,
        "source": paper.source,
        "venue": paper.venue,
        "year": paper.year,
        "title": paper.title,
        "abstract": paper.abstract,
        "created_at": paper.created_at.isoformat(),
        "updated_at": paper.updated_at.isoformat(),
        "doc": paper.model_dump_json(),
    }


def _fts_query(text: str) -> str:
    """User text -> an FTS5 query of quoted terms, so no input is FTS syntax."""
    return " ".join(f'"{t}"' for t in re.findall(r"\w+", text))


class SQLitePaperIndex(PaperIndex):
    """Paper index in one SQLite file (WAL, FTS5). The embedded default."""

    _block_type_name = "SQLite Paper Index"
    _block_type_slug = "sqlite-paper-index"
    _description = "Annapurna's paper index in a local SQLite file (WAL mode, FTS5 search)."

    path: str = Field(description="SQLite database file; created if missing")
    busy_timeout_s: float = Field(30.0, description="how long a writer waits for the lock")

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        key = (os.getpid(), str(Path(self.path).expanduser()))
        conns = getattr(_local, "conns", None)
        if conns is None:
            conns = _local.conns = {}
        conn = conns.get(key)
        if conn is not None:
            return conn
        path = Path(key[1])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=self.busy_timeout_s)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        except (sqlite3.Error, OSError) as e:
            raise PaperIndexError(
                f"paper index {path}: cannot open it as an SQLite database ({e}); "
                "move the file aside or point ANNAPURNA_SQLITE_PATH elsewhere"
            ) from e
        conns[key] = conn
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise PaperIndexError(f"paper index {self.path}: {e}") from e

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's one write lock from its start, so
        a read-modify-write in it cannot lose another process's update."""
        conn = self._connect()
        with self._errors():
            for attempt in range(5):
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e) or attempt == 4:
                        raise
                    time.sleep(0.05 * 2**attempt)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _query(self, sql: str, params: tuple | dict = ()) -> list[Paper]:
        with self._errors():
            rows = self._connect().execute(sql, params).fetchall()
        return [Paper.model_validate_json(r[0]) for r in rows]

    # -- the contract ------------------------------------------------------------------
    def upsert(self, papers: Iterable[Paper]) -> int:
        rows = [_row(p) for p in papers]
        with self._transaction() as conn:
            conn.executemany(REPLACE, rows)
        return len(rows)

    def add_new(self, papers: Iterable[Paper]) -> list[str]:
        new: list[str] = []
        rows = [_row(p) for p in papers]
        with self._transaction() as conn:
            for row in rows:
                if conn.execute(INSERT_NEW, row).rowcount:
                    new.append(row["id"])
        return new

    def get(self, paper_id: str) -> Paper | None:
        found = self._query("SELECT doc FROM papers WHERE id = ?", (paper_id,))
        return found[0] if found else None

    def update(self, paper_id: str, change: Callable[[Paper], Paper]) -> Paper:
        with self._transaction() as conn:
            row = conn.execute("SELECT doc FROM papers WHERE id = ?", (paper_id,)).fetchone()
            if row is None:
                raise UnknownPaperError(paper_id)
            paper = change(Paper.model_validate_json(row[0]))
            if paper.id != paper_id:
                raise PaperIndexError(f"an update of {paper_id} tried to change its id to {paper.id}")
            conn.execute(REPLACE, _row(paper))
        return paper

    def search(self, text: str, limit: int = 20, status: PaperStatus | None = None) -> list[Paper]:
        query = _fts_query(text)
        if not query:
            return []
        sql = (
            "SELECT p.doc FROM papers_fts JOIN papers p ON p.rowid = papers_fts.rowid "
            "WHERE papers_fts MATCH ?" + (" AND p.status = ?" if status else "")
            + " ORDER BY bm25(papers_fts, 2.0, 1.0) LIMIT ?"
        )
        params = (query, PaperStatus(status).value, limit) if status else (query, limit)
        return self._query(sql, params)

    def list_papers(
        self,
        status: PaperStatus | None = None,
        venue: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Paper]:
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(PaperStatus(status).value)
        if venue:
            where.append("venue = ? COLLATE NOCASE")
            params.append(venue)
        if since:
            where.append("updated_at >= ?")
            params.append(since.isoformat())
        sql = "SELECT doc FROM papers" + (" WHERE " + " AND ".join(where) if where else "")
        return self._query(sql + " ORDER BY updated_at DESC LIMIT ?", (*params, limit))

    def counts(self) -> dict[PaperStatus, int]:
        with self._errors():
            rows = self._connect().execute("SELECT status, count(*) FROM papers GROUP BY status")
            found = dict(rows.fetchall())
        return {s: found.get(s.value, 0) for s in PaperStatus}
