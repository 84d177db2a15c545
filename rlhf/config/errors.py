"""The error every configuration problem is raised as, and the one a section's ``check()`` raises."""

from __future__ import annotations

from rlhf.errors import RlhfError


class ConfigError(RlhfError, ValueError):
    """A configuration problem; the message names the file, line and key.

    ``key`` is the dotted key the problem is about (``reward.head_init_std``, ``stages[0].name``, ``deepspeed``
    for a section as a whole), set where the error is raised; None when it is about no one key (a file that
    cannot be read, invalid YAML, a malformed override).
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key

    def __reduce__(self):  # keep the key through pickling (e.g. from a worker process)
        return type(self), (str(self), self.key)


class FieldError(ValueError):
    """Raised by a section's ``check()``: ``field`` (a field of that section) has a value it refuses, and why.

    The loader turns it into a :class:`ConfigError` whose key is the section's dotted prefix + ``field``. A plain
    ``ValueError`` from ``check()`` is about the section as a whole. ``str()`` reads ``field: reason``.
    """

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason
