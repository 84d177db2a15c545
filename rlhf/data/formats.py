"""Reading and validating data files: JSONL, Parquet, CSV or a ``datasets`` name; every row keeps its line number.

Formats (docs/design.md, "Data formats"):

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
import re
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
        # line 0: a problem of the whole file (empty, unreadable, too short), not of one row
        return f"{self.path}:{self.line}: {self.reason}" if self.line else f"{self.path}: {self.reason}"


class DataError(RlhfError, ValueError):
    """One or more bad rows; the message lists them (file:line: reason).

    The first line of the message names the file; ``hint`` (e.g. how to train without the rows) is added to it.
    A single problem is the message on its own, on one line.
    """

    def __init__(self, problems: list[Problem], limit: int = 20, hint: str = ""):
        self.problems = problems
        if len(problems) == 1:  # one line: "file:line: reason" (or "file: reason" for the whole file)
            super().__init__(str(problems[0]) + (f" ({hint})" if hint else ""))
            return
        files = sorted({p.path for p in problems})
        where = f" in {files[0]}" if len(files) == 1 else f" in {len(files)} files"
        shown = "\n".join(f"  {p}" for p in problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(f"{len(problems)} bad row(s){where}{f' ({hint})' if hint else ''}:\n{shown}{more}")


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


DATA_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv", ".txt")
"""Extensions of local data files (compared case-insensitively): a name with one is never looked up on the hub."""


def looks_local(path: str) -> bool:
    """True when ``path`` can only mean a local file: it has a data file extension, starts with ``./``, ``../``,
    ``/`` or ``~``, or its directory exists here. Anything else may be a ``datasets`` name on the hub."""
    if path.lower().endswith(DATA_EXTENSIONS) or path.startswith((".", "/", "~")):
        return True
    return "/" in path and os.path.isdir(os.path.dirname(path))


def _invalid_json(e: json.JSONDecodeError) -> str:
    msg = e.msg[: -len(" at")] if e.msg.endswith(" at") else e.msg  # "Unterminated string starting at"
    return f"invalid JSON ({msg} at column {e.colno})"


def _read_jsonl(path: str, table: Table) -> None:
    """JSON Lines, read as bytes so that a line that is not UTF-8 is reported with its number."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise DataError([Problem(path, 0, "UTF-16 text; save the file as UTF-8 JSON Lines")])
        f.seek(0)
        for i, raw in enumerate(f, start=1):
            if b"\x00" in raw:
                raise DataError([Problem(
                    path, i, "binary data (a NUL byte), not UTF-8 JSON Lines text: is this the right file?"
                )])
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                table.problems.append(Problem(
                    path, i, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line); "
                    "save the file as UTF-8"
                ))
                continue
            if i == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte order mark
            if not line.strip():
                continue
            try:
                obj = json.loads(line.rstrip("\r\n"))  # the line end is not part of a string left open
            except json.JSONDecodeError as e:
                table.problems.append(Problem(path, i, _invalid_json(e)))
                continue
            if not isinstance(obj, dict):
                table.problems.append(Problem(path, i, f"expected a JSON object, got {type(obj).__name__}"))
                continue
            table.rows.append(Row(path, i, obj))


def _read_csv(path: str, table: Table) -> None:
    """CSV with a header row; each row keeps the line it starts on. An empty cell is a missing field (as in
    ``datasets``), and a ``margin`` cell is read as a number."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            start = 2  # line 1 is the header
            for rec in reader:
                row = {k: (v if v != "" else None) for k, v in rec.items() if k is not None}
                if isinstance(row.get("margin"), str):
                    try:
                        row["margin"] = float(row["margin"])
                    except ValueError:
                        pass  # reported by the row check as a non-number
                if None in rec:
                    table.problems.append(Problem(path, start, "more cells than the header has columns"))
                else:
                    table.rows.append(Row(path, start, row))
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise DataError([Problem(path, 0, "not UTF-8 text; save the CSV file as UTF-8")]) from None
    except csv.Error as e:
        raise DataError([Problem(path, reader.line_num, f"invalid CSV ({e})")]) from None


def read_table(path: str) -> Table:
    """Read a JSONL (``.jsonl``/``.json``), Parquet or CSV file, or a ``datasets`` name (``name`` or
    ``name:split``); extensions are compared case-insensitively.

    JSON that does not parse, lines that are not UTF-8 and rows that are not objects become problems; nothing is
    raised for them. A file that cannot be read at all (binary, wrong type) is a :class:`DataError`.
    """
    table = Table()
    ext = os.path.splitext(path)[1].lower()
    if os.path.isfile(path) and ext in (".jsonl", ".json"):
        _read_jsonl(path, table)
        return table
    if os.path.isfile(path) and ext == ".parquet":
        import pyarrow.parquet as pq

        try:
            objs = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's ArrowInvalid and friends: not a Parquet file
            raise DataError([Problem(path, 0, f"not a readable Parquet file ({e})")]) from None
        for i, obj in enumerate(objs, start=1):
            table.rows.append(Row(path, i, obj))
        return table
    if os.path.isfile(path) and ext == ".csv":
        _read_csv(path, table)
        return table
    if os.path.exists(path):
        what = "a directory" if os.path.isdir(path) else f"an unsupported file type ({ext or 'no extension'})"
        raise DataError([Problem(path, 0, f"{what}: use a JSON Lines (.jsonl, .json), Parquet (.parquet) or "
                                          "CSV (.csv) file, or a datasets name")])
    if looks_local(path):
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
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such categories file (set it to '' to allow any category)")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError([Problem(path, mark.line + 1 if mark else 0, f"not a readable categories YAML file: {e}")]) from None
    cats = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(cats, dict) or not cats:
        raise DataError([Problem(path, 0, "expected a 'categories' mapping of id -> {name, position}")])
    return cats


# ----------------------------------------------------------------------------------------------------------
# data.on_invalid=drop: what was dropped, for the log and summary.json
# ----------------------------------------------------------------------------------------------------------


def reason_key(reason: str) -> str:
    """The kind of a problem, without its row-specific details: "invalid JSON", "prompts differ" ..."""
    r = reason.split(" (")[0].split(": ")[0]
    return re.sub(r"\[\d+\]", "[i]", r).strip()


def dropped_summary(dropped: list[Problem], first: int = 10) -> dict:
    """``{count, by_reason, by_file, first}`` of the rows ``data.on_invalid=drop`` left out."""
    by_reason: dict[str, int] = {}
    by_file: dict[str, int] = {}
    for p in dropped:
        by_reason[reason_key(p.reason)] = by_reason.get(reason_key(p.reason), 0) + 1
        by_file[p.path] = by_file.get(p.path, 0) + 1
    return {"count": len(dropped), "by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
            "by_file": by_file, "first": [str(p) for p in dropped[:first]]}


def describe_dropped(dropped: list[Problem], first: int = 5) -> str:
    """One log line (and the first dropped rows, indented) for ``data.on_invalid=drop``."""
    s = dropped_summary(dropped, first)
    reasons = ", ".join(f"{k}: {v}" for k, v in s["by_reason"].items())
    return "\n".join([f"dropped {s['count']} invalid row(s) (data.on_invalid=drop): {reasons}"]
                     + [f"  {x}" for x in s["first"]] + (["  ..."] if s["count"] > first else []))


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
