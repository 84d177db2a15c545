"""``rlhf data check FILE``: report every bad row (file, line, reason), then a summary.

The same parsers the stages use run here, so a file that passes the check trains, and a file that fails
it is refused by training with the same messages.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from rlhf.data.formats import DataError, Problem, detect_kind, load_categories, read_table
from rlhf.data.sft import encode_prompt, encode_sft, parse_prompt_row, parse_sft_row


@dataclass
class Report:
    path: str
    kind: str
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    categories: Counter = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list)
    length_unit: str = "words"
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, first line with the same content)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        out = [f"{p}" for p in self.problems]
        good = self.rows - len({p.line for p in self.problems})
        out.append(f"{self.path}: {self.kind} data, {self.rows} rows, {good} valid, {len(self.problems)} problem(s)")
        if self.categories:
            cats = ", ".join(f"{k} {v}" for k, v in sorted(self.categories.items()))
            out.append(f"  rows per category: {cats}")
        if self.lengths:
            out.append(f"  length ({self.length_unit}): " + ", ".join(f"{k} {v}" for k, v in percentiles(self.lengths)))
        if self.duplicates:
            dup = ", ".join(f"line {a} = line {b}" for a, b in self.duplicates[:10])
            more = f" (+{len(self.duplicates) - 10} more)" if len(self.duplicates) > 10 else ""
            out.append(f"  exact duplicates: {len(self.duplicates)}: {dup}{more}")
        else:
            out.append("  exact duplicates: none")
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)


def percentiles(values: list[int]) -> list[tuple[str, int]]:
    s = sorted(values)

    def q(p: float) -> int:
        return s[min(len(s) - 1, int(round(p * (len(s) - 1))))]

    return [("min", s[0]), ("p50", q(0.5)), ("p90", q(0.9)), ("p99", q(0.99)), ("max", s[-1])]


def check_file(
    path: str,
    kind: str = "auto",
    tokenizer=None,
    categories_file: str = "",
    max_length: int | None = None,
) -> Report:
    """Validate ``path`` as ``kind`` ('auto', 'sft', 'prompt', 'preference')."""
    table = read_table(path)
    if not table.rows and not table.problems:  # training refuses an empty file: so does the check
        raise DataError([Problem(path, 0, "no rows: the file is empty")])
    categories = load_categories(categories_file) if categories_file else {}
    if kind == "auto":
        kind = detect_kind(table.rows[0].data) if table.rows else "sft"
    report = Report(path, kind, rows=len(table.rows) + len(table.problems), problems=list(table.problems))
    report.length_unit = "tokens" if tokenizer is not None else "words"
    seen: dict[str, int] = {}
    if kind == "preference":
        from rlhf.data.preference import check_preference_rows

        check_preference_rows(table.rows, report, tokenizer, categories, max_length)
    elif kind in ("sft", "prompt"):
        for row in table.rows:
            parsed = parse_sft_row(row, categories) if kind == "sft" else parse_prompt_row(row, categories)
            if isinstance(parsed, str):
                report.problems.append(Problem(row.path, row.line, parsed))
                continue
            if kind == "sft":
                category = parsed.category
                if tokenizer is not None:
                    n = len(encode_sft(tokenizer, parsed)["input_ids"])
                else:
                    n = len(parsed.completion.split())
            else:
                category = parsed[1]
                n = len(encode_prompt(tokenizer, parsed[0])) if tokenizer is not None else len(
                    " ".join(m["content"] for m in parsed[0]).split()
                )
            if max_length is not None and tokenizer is not None and n > max_length:
                report.problems.append(Problem(row.path, row.line, f"{n} tokens after tokenisation, over max_length {max_length}"))
            report.categories[category or "(none)"] += 1
            report.lengths.append(n)
    else:
        report.problems.append(Problem(path, 1, f"cannot tell the data kind from the fields of the first row: {sorted(table.rows[0].data)}"))
    for row in table.rows:
        key = json.dumps(row.data, sort_keys=True)
        if key in seen:
            report.duplicates.append((row.line, seen[key]))
        else:
            seen[key] = row.line
    report.problems.sort(key=lambda p: p.line)
    invalid = [p for p in report.problems if "max_length" not in p.reason]
    if invalid and kind in ("sft", "preference"):
        report.notes.append(f"{len(invalid)} invalid row(s): training refuses the file; with data.on_invalid=drop "
                            "it trains without them and lists them in the log and summary.json")
    if tokenizer is None:
        report.notes.append("no tokenizer given: lengths are in words and over-length rows are not checked")
    return report
