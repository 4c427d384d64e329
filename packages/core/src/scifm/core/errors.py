"""Errors that the CLI prints as one clear line (file, record, problem)."""

from __future__ import annotations


class SciFMError(Exception):
    """Base class: anything raised as a SciFMError is a user-facing problem, not a bug."""


class ConfigError(SciFMError):
    """A configuration file or flag is wrong (unknown key, bad value)."""


class DataError(SciFMError):
    """Input data is malformed. Names the file, the record and the problem."""

    def __init__(self, path: object, problem: str, record: object | None = None):
        self.path = str(path)
        self.record = record
        self.problem = problem
        where = self.path if record is None else f"{self.path} [{record}]"
        super().__init__(f"{where}: {problem}")
