"""Reading and validating data files: JSONL, Parquet or a ``datasets`` name; every row keeps its line number.

Formats (DESIGN.md, "Data formats"):

- SFT: ``{prompt, completion}`` or ``{messages}``; optional ``category``.
- Prompts: ``{prompt}``; optional ``category``.
- Preference: ``{prompt, chosen, rejected}`` or ``{chosen, rejected}``; optional ``margin``, ``category``.

Strings or chat messages (``[{role, content}]``) are accepted wherever text is. A bad row becomes a
:class:`Problem` (file, line, reason); :class:`DataError` carries all of them so a command can report every bad
row at once and refuse to train before any step.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from rlhf.errors import RlhfError

ROLES = ("system", "user", "assistant")
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class DataError(RlhfError, ValueError):
    """One or more bad rows; the message lists them (file:line: reason)."""

    def __init__(self, problems: list[Problem], limit: int = 20):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(f"{len(problems)} bad row(s):\n{shown}{more}")


@dataclass
class Row:
    """One row of a data file: where it came from and its JSON object."""

    path: str
    line: int
    data: dict[str, Any]


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_table(path: str) -> Table:
    """Read a JSONL or Parquet file, or a ``datasets`` name (``name`` or ``name:split``).

    JSON that does not parse and rows that are not objects become problems; nothing is raised for them.
    """
    table = Table()
    if os.path.isfile(path) and path.endswith((".jsonl", ".json")):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    table.problems.append(Problem(path, i, f"invalid JSON ({e.msg} at column {e.colno})"))
                    continue
                if not isinstance(obj, dict):
                    table.problems.append(Problem(path, i, f"expected a JSON object, got {type(obj).__name__}"))
                    continue
                table.rows.append(Row(path, i, obj))
        return table
    if os.path.isfile(path) and path.endswith(".parquet"):
        import pyarrow.parquet as pq

        for i, obj in enumerate(pq.read_table(path).to_pylist(), start=1):
            table.rows.append(Row(path, i, obj))
        return table
    if os.path.exists(path):
        raise ValueError(f"{path}: unsupported file type (use .jsonl or .parquet)")
    if "/" in path and os.path.exists(os.path.dirname(path)) or path.startswith((".", "/")):
        raise FileNotFoundError(f"{path}: no such file")
    import datasets

    name, _, split = path.partition(":")
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # a hub name that cannot be fetched: say which and why
        raise FileNotFoundError(f"{path}: not a local file, and loading it as a dataset failed: {e}") from None
    for i, obj in enumerate(ds, start=1):
        table.rows.append(Row(path, i, dict(obj)))
    return table


def load_categories(path: str) -> dict[str, dict]:
    """Category id -> {name, position} from a categories.yaml (``''`` -> no restriction)."""
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    cats = data.get("categories")
    if not isinstance(cats, dict) or not cats:
        raise ValueError(f"{path}: expected a 'categories' mapping of id -> {{name, position}}")
    return cats


# ----------------------------------------------------------------------------------------------------------
# Field validation shared by the row kinds
# ----------------------------------------------------------------------------------------------------------


def _messages_error(value: Any, name: str) -> str | None:
    if not isinstance(value, list) or not value:
        return f"'{name}' must be a non-empty list of {{role, content}} messages"
    for j, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return f"'{name}[{j}]' must be an object with 'role' and 'content'"
        if m["role"] not in ROLES:
            return f"'{name}[{j}].role' is {m['role']!r}; expected one of {', '.join(ROLES)}"
        if not isinstance(m["content"], str):
            return f"'{name}[{j}].content' must be a string, got {type(m['content']).__name__}"
        if not m["content"].strip():
            return f"'{name}[{j}].content' is empty"
    return None


def text_error(row: dict, name: str, allow_messages: bool = True) -> str | None:
    """Why ``row[name]`` is not a usable text (string or message list), or None."""
    if name not in row or row[name] is None:
        return f"missing field '{name}'"
    value = row[name]
    if isinstance(value, str):
        return None if value.strip() else f"empty field '{name}'"
    if allow_messages and isinstance(value, list):
        return _messages_error(value, name)
    kind = "a string or a list of messages" if allow_messages else "a string"
    return f"field '{name}' must be {kind}, got {type(value).__name__}"


def category_error(row: dict, categories: dict) -> str | None:
    cat = row.get("category")
    if cat is None:
        return None
    if not isinstance(cat, str):
        return f"field 'category' must be a string, got {type(cat).__name__}"
    if categories and cat not in categories:
        import difflib

        close = difflib.get_close_matches(cat, list(categories), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown category {cat!r}{hint}"
    return None


def as_messages(value: str | Messages, role: str = "user") -> Messages:
    """A prompt as a message list (a plain string becomes one ``role`` message)."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": m["role"], "content": m["content"]} for m in value]


def as_text(value: str | Messages) -> str:
    """A completion/response as plain text (a message list must hold one assistant message)."""
    if isinstance(value, str):
        return value
    return "".join(m["content"] for m in value)


def detect_kind(row: dict) -> str:
    if "chosen" in row or "rejected" in row:
        return "preference"
    if "completion" in row or "messages" in row:
        return "sft"
    if "prompt" in row:
        return "prompt"
    if "text" in row:
        return "text"
    return "unknown"
