"""The error every configuration problem is raised as."""

from __future__ import annotations

from rlhf.errors import RlhfError


class ConfigError(RlhfError, ValueError):
    """A configuration problem; the message names the file, line and key."""
