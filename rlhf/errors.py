"""The project's one error base class.

Every problem a user can fix (a bad config key, a bad data row, a refused output directory, a checkpoint that
will not load safely, training that went non-finite) is raised as a subclass of :class:`RlhfError`. The CLI
catches it and prints ``error: <message>`` without a traceback; anything else is a bug and keeps its traceback.
Subclasses also derive from the builtin they replace (``ValueError`` ...) so callers that catch those still do.
"""

from __future__ import annotations


class RlhfError(Exception):
    """A problem the user can act on; the message names the file, line, key or directory."""


class OutputDirError(RlhfError, FileExistsError):
    """``run.output_dir`` cannot be written safely (foreign files, an input model, a lock held by another run)."""


class CheckpointError(RlhfError, RuntimeError):
    """A checkpoint cannot be resumed (incomplete, written by another world size, or refused as unsafe)."""


class TrainingError(RlhfError, RuntimeError):
    """Training stopped on purpose (e.g. a non-finite loss); the message says where the last good checkpoint is."""
