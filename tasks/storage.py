"""Storing objects in the configured Prefect filesystem blocks.

Keys inside each store (`blocks.settings.filesystem(kind)`):

    raw      <source>/<id>/paper.pdf, <source>/<id>/paper.txt
    code     <source>/<id>/v<N>/program.py, <source>/<id>/v<N>/plan.md
    results  <source>/<id>/v<N>/result.json, .../stdout.txt, .../stderr.txt

Every write is write-once: the same bytes again are a no-op, different bytes under an
existing key are an error. So a raw paper, once stored, is never overwritten, and nothing
here deletes.
"""

from __future__ import annotations

import hashlib

from prefect.filesystems import WritableFileSystem

from blocks.errors import ImmutableObjectError, StorageError
from blocks.paper import storage_prefix


def raw_pdf_key(paper_id: str) -> str:
    return f"{storage_prefix(paper_id)}/paper.pdf"


def raw_text_key(paper_id: str) -> str:
    return f"{storage_prefix(paper_id)}/paper.txt"


def code_key(paper_id: str, version: int, name: str = "program.py") -> str:
    return f"{storage_prefix(paper_id)}/v{version}/{name}"


def result_key(paper_id: str, version: int, name: str = "result.json") -> str:
    return f"{storage_prefix(paper_id)}/v{version}/{name}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_missing(exc: Exception) -> bool:
    """How each filesystem block says 'no such object'."""
    if isinstance(exc, FileNotFoundError):
        return True
    if isinstance(exc, ValueError) and "does not exist" in str(exc):  # LocalFileSystem
        return True
    response = getattr(exc, "response", None) or {}  # S3Bucket, through botocore
    return response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}


def read_object(fs: WritableFileSystem, key: str) -> bytes | None:
    """The object's bytes, or None when there is none under that key."""
    try:
        return fs.read_path(key, _sync=True)
    except Exception as e:
        if _is_missing(e):
            return None
        raise StorageError(f"cannot read {key} from {type(fs).__name__}: {e}") from e


def put_once(fs: WritableFileSystem, key: str, data: bytes) -> str:
    """Store `data` under `key` unless it is already there; return its sha256.

    Writing different bytes under a key that holds an object raises ImmutableObjectError
    and leaves the stored object as it was.
    """
    digest = sha256(data)
    existing = read_object(fs, key)
    if existing is not None:
        if existing != data:
            raise ImmutableObjectError(
                f"{key} already holds a different object (sha256 {sha256(existing)[:12]}, "
                f"new {digest[:12]}); stored objects are never overwritten"
            )
        return digest
    try:
        fs.write_path(key, data, _sync=True)
    except Exception as e:
        raise StorageError(f"cannot write {key} to {type(fs).__name__}: {e}") from e
    return digest
