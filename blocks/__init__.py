"""Prefect block types and settings resolution. `prefect block register -m blocks`
registers the paper index blocks defined here."""

from blocks.index import PaperIndex
from blocks.opensearch_index import OpenSearchPaperIndex
from blocks.sqlite_index import SQLitePaperIndex

__all__ = ["PaperIndex", "OpenSearchPaperIndex", "SQLitePaperIndex"]
