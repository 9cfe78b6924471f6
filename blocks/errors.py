"""The errors Annapurna raises on bad input or configuration. Each one names the thing
that is wrong and, where there is one, the setting that fixes it."""


class AnnapurnaError(Exception):
    """Base of every error we raise on purpose; the CLI prints these as one line."""


class ConfigError(AnnapurnaError):
    """A setting is unknown, invalid, or points at something unusable."""


class PaperIndexError(AnnapurnaError):
    """The paper index cannot be opened, read or written."""


class UnknownPaperError(PaperIndexError, KeyError):
    def __init__(self, paper_id: str):
        super().__init__(paper_id)
        self.paper_id = paper_id

    def __str__(self) -> str:
        return f"no paper with id {self.paper_id!r} in the index"


class IllegalTransitionError(AnnapurnaError):
    def __init__(self, paper_id: str, current: str, wanted: str, allowed: list[str]):
        self.paper_id, self.current, self.wanted = paper_id, current, wanted
        ok = ", ".join(allowed) or "nothing (final state)"
        super().__init__(
            f"paper {paper_id}: cannot move from '{current}' to '{wanted}'; from '{current}' it may go to {ok}"
        )


class StorageError(AnnapurnaError):
    """Object storage refused or lost a write."""


class ImmutableObjectError(StorageError):
    """Someone tried to store different bytes under a key that already holds an object."""
