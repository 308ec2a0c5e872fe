"""Errors the user can fix. Each derives from `UserError`; the stage runner (`cli.run`) prints
one `error: ...` line for these and exits 2, and lets any other exception (a bug) show its
traceback. Messages name the param, file or command that fixes the problem."""
from __future__ import annotations


class UserError(Exception):
    """Base of every user-facing error."""


class ParamError(UserError, ValueError):
    """A param in params.yaml is unknown, of the wrong type or out of range."""


class IntakeError(UserError, ValueError):
    """Bad input data: the message names the path and what to do."""


class SourceError(UserError, RuntimeError):
    """A dataset cannot be obtained (offline, unknown handle, no cache)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the step needs (a checkpoint, pretrained weights) is not where it should be."""
