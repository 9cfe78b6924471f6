"""The production paper index: OpenSearch index `research-papers-v2`.

Records are the paper's JSON; the mapping is explicit and `dynamic: false`, so only the
fields we query are indexed and the rest is kept in `_source` as it is. Atomic updates use
optimistic concurrency (`if_seq_no` / `if_primary_term`), retried on conflict.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from pydantic import Field, SecretStr

from blocks.errors import PaperIndexError, UnknownPaperError
from blocks.index import PaperIndex
from blocks.paper import Paper, PaperStatus

MAPPING = {
    "settings": {
        "index": {"number_of_shards": 1, "number_of_replicas": 1},
        "analysis": {"normalizer": {"lowercase": {"type": "custom", "filter": ["lowercase"]}}},
    },
    "mappings": {
        "dynamic": False,
        "properties": {
            "id": {"type": "keyword"},
            "source": {"type": "keyword"},
            "venue": {"type": "keyword", "normalizer": "lowercase"},
            "year": {"type": "integer"},
            "title": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 512}}},
            "abstract": {"type": "text"},
            "authors": {"type": "text"},
            "status": {"type": "keyword"},
            "content_hash": {"type": "keyword"},
            "error": {"type": "text"},
            "verdict": {
                "properties": {
                    "relevant": {"type": "boolean"},
                    "relevance": {"type": "float"},
                    "novelty": {"type": "float"},
                    "topics": {"type": "keyword"},
                }
            },
            "created_at": {"type": "date"},
            "updated_at": {"type": "date"},
        },
    },
}

_clients: dict[tuple, object] = {}
_lock = threading.Lock()


class OpenSearchPaperIndex(PaperIndex):
    """Paper index in an OpenSearch cluster (production)."""

    _block_type_name = "OpenSearch Paper Index"
    _block_type_slug = "opensearch-paper-index"
    _description = "Annapurna's paper index in OpenSearch (index research-papers-v2)."

    url: str = Field(description="e.g. https://search-xyz.us-east-1.es.amazonaws.com")
    index_name: str = "research-papers-v2"
    username: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True
    timeout_s: int = 30
    refresh: str = Field("wait_for", description="'wait_for' makes writes visible to the next read")

    def _client(self):
        from opensearchpy import OpenSearch

        key = (self.url, self.username, self.index_name)
        with _lock:
            if key not in _clients:
                auth = (self.username, self.password.get_secret_value()) if self.username else None
                client = OpenSearch(
                    hosts=[self.url], http_auth=auth, verify_certs=self.verify_certs,
                    timeout=self.timeout_s, max_retries=3, retry_on_timeout=True,
                )
                try:
                    if not client.indices.exists(index=self.index_name):
                        client.indices.create(index=self.index_name, body=MAPPING, ignore=400)
                except Exception as e:
                    raise PaperIndexError(
                        f"paper index {self.url}/{self.index_name}: unreachable or refused ({e}); "
                        "check ANNAPURNA_OPENSEARCH_URL and its credentials"
                    ) from e
                _clients[key] = client
        return _clients[key]

    def _hits(self, body: dict) -> list[Paper]:
        res = self._client().search(index=self.index_name, body=body)
        return [Paper.model_validate(h["_source"]) for h in res["hits"]["hits"]]

    def upsert(self, papers: Iterable[Paper]) -> int:
        from opensearchpy import helpers

        actions = [
            {"_op_type": "index", "_index": self.index_name, "_id": p.id, "_source": p.model_dump(mode="json")}
            for p in papers
        ]
        ok, _ = helpers.bulk(self._client(), actions, refresh=self.refresh)
        return ok

    def add_new(self, papers: Iterable[Paper]) -> list[str]:
        from opensearchpy import helpers

        papers = list(papers)
        actions = [
            {"_op_type": "create", "_index": self.index_name, "_id": p.id, "_source": p.model_dump(mode="json")}
            for p in papers
        ]
        _, errors = helpers.bulk(
            self._client(), actions, refresh=self.refresh, raise_on_error=False
        )
        failed = {e["create"]["_id"]: e["create"] for e in errors}
        other = [e for e in failed.values() if e.get("status") != 409]
        if other:
            raise PaperIndexError(f"paper index {self.index_name}: bulk create failed: {other[:3]}")
        return [p.id for p in papers if p.id not in failed]

    def get(self, paper_id: str) -> Paper | None:
        res = self._client().get(index=self.index_name, id=paper_id, ignore=404)
        return Paper.model_validate(res["_source"]) if res.get("found") else None

    def update(self, paper_id: str, change: Callable[[Paper], Paper]) -> Paper:
        from opensearchpy.exceptions import ConflictError

        client = self._client()
        for _ in range(20):
            res = client.get(index=self.index_name, id=paper_id, ignore=404)
            if not res.get("found"):
                raise UnknownPaperError(paper_id)
            paper = change(Paper.model_validate(res["_source"]))
            if paper.id != paper_id:
                raise PaperIndexError(f"an update of {paper_id} tried to change its id to {paper.id}")
            try:
                client.index(
                    index=self.index_name, id=paper_id, body=paper.model_dump(mode="json"),
                    if_seq_no=res["_seq_no"], if_primary_term=res["_primary_term"],
                    refresh=self.refresh,
                )
                return paper
            except ConflictError:
                continue
        raise PaperIndexError(f"paper {paper_id}: gave up after 20 conflicting concurrent updates")

    def search(self, text: str, limit: int = 20, status: PaperStatus | None = None) -> list[Paper]:
        if not text.strip():
            return []
        query: dict = {
            "bool": {
                "must": [{"multi_match": {"query": text, "fields": ["title^2", "abstract"], "operator": "and"}}],
                "filter": [{"term": {"status": PaperStatus(status).value}}] if status else [],
            }
        }
        return self._hits({"query": query, "size": limit})

    def list_papers(
        self,
        status: PaperStatus | None = None,
        venue: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Paper]:
        filters: list[dict] = []
        if status:
            filters.append({"term": {"status": PaperStatus(status).value}})
        if venue:
            filters.append({"term": {"venue": venue}})
        if since:
            filters.append({"range": {"updated_at": {"gte": since.isoformat()}}})
        body = {"query": {"bool": {"filter": filters}}, "sort": [{"updated_at": "desc"}], "size": limit}
        return self._hits(body)

    def counts(self) -> dict[PaperStatus, int]:
        res = self._client().search(
            index=self.index_name,
            body={"size": 0, "aggs": {"by_status": {"terms": {"field": "status", "size": 50}}}},
        )
        found = {b["key"]: b["doc_count"] for b in res["aggregations"]["by_status"]["buckets"]}
        return {s: found.get(s.value, 0) for s in PaperStatus}
