"""Human judge: export -> fill the sheet as a rater would (by reading the texts, not the key) -> import gives
the true verdicts and statistics; the key is not in the sheet; bad verdict files give line-numbered errors."""

from __future__ import annotations

import csv
import json
import random
import re

import pytest

from rlhf.eval.human import SHEET_COLUMNS, VerdictError, export_sheet, import_verdicts
from rlhf.eval.judges import PairItem
from rlhf.eval.stats import summarize

CATS = ["health", "relationships", "terrorism", None]
CANDIDATE_NAME = "ppo-run-7b"


def make_items(n: int = 24, seed: int = 0) -> tuple[list[PairItem], list[str]]:
    """Items with awkward text (commas, quotes, newlines, markup, non-ASCII) and a known true verdict each.
    Two samples per prompt, so prompt ids repeat."""
    rng = random.Random(seed)
    items, truth = [], []
    for i in range(n):
        p = i // 2
        items.append(PairItem(
            prompt=f"Prompt {p}: is it \"fine\", or not?\nSecond line & <b>tag</b> caf\u00e9",
            category=CATS[p % len(CATS)],
            candidate=f"First answer {i}, with a comma, \"quotes\",\nnew lines and </script> inside.",
            baseline=f"Other reply {i}: plain text \u2013 with a dash.",
            prompt_id=p,
        ))
        truth.append(rng.choice(["win", "win", "tie", "loss"]))
    return items, truth


def rater_choice(row: dict, item: PairItem, verdict: str) -> str:
    """What a rater who prefers according to ``verdict`` writes, found from the texts shown (not from the key)."""
    if verdict == "tie":
        return "tie"
    cand = "A" if row["response_A"] == item.candidate else "B"
    assert row["response_" + cand] == item.candidate and row["response_" + "AB"[cand == "A"]] == item.baseline
    return cand if verdict == "win" else "AB"[cand == "A"]


def read_sheet(path: str) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def write_sheet(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def test_export_fill_import_round_trip(tmp_path):
    items, truth = make_items()
    paths = export_sheet(items, str(tmp_path / "sheet"), seed=3, candidate_name=CANDIDATE_NAME)
    rows = read_sheet(paths.csv)
    assert list(rows[0]) == SHEET_COLUMNS and len(rows) == len(items)
    assert all(r["verdict"] == "" for r in rows)
    for r, it in zip(rows, items):
        assert r["prompt"] == it.prompt and r["category"] == (it.category or "")
        assert {r["response_A"], r["response_B"]} == {it.candidate, it.baseline}
    # the rater fills in the sheet; mixed case and spaces are accepted
    for r, it, v in zip(rows, items, truth):
        r["verdict"] = {"A": " a", "B": "B ", "tie": "Tie"}[rater_choice(r, it, v)]
    write_sheet(paths.csv, rows)
    got = import_verdicts(paths.csv, paths.key)
    assert got == truth
    ids, cats = [it.prompt_id for it in items], [it.category for it in items]
    assert summarize(got, ids, cats, n_resamples=300) == summarize(truth, ids, cats, n_resamples=300)


def test_sides_are_randomised_by_seed(tmp_path):
    items, _ = make_items(40)
    a = read_sheet(export_sheet(items, str(tmp_path / "a"), seed=1).csv)
    b = read_sheet(export_sheet(items, str(tmp_path / "b"), seed=1).csv)
    c = read_sheet(export_sheet(items, str(tmp_path / "c"), seed=2).csv)
    side = [["A" if r["response_A"] == it.candidate else "B" for r, it in zip(s, items)] for s in (a, b, c)]
    assert side[0] == side[1]  # deterministic
    assert side[0] != side[2]  # depends on the seed
    assert 10 <= side[0].count("A") <= 30  # both sides used, roughly half each
    key = json.load(open(tmp_path / "a" / "key.json"))
    assert [x["candidate"] for x in key["items"]] == side[0]


def test_key_is_not_in_the_sheet(tmp_path):
    items, _ = make_items()
    paths = export_sheet(items, str(tmp_path), seed=5, candidate_name=CANDIDATE_NAME)
    key = json.load(open(paths.key))
    assert key["candidate_name"] == CANDIDATE_NAME and key["seed"] == 5 and len(key["items"]) == len(items)
    for path in (paths.csv, paths.html):
        text = open(path, encoding="utf-8-sig").read()
        assert CANDIDATE_NAME not in text
        assert "candidate" not in text.lower() and "baseline" not in text.lower()  # no side labels or names
    rows = read_sheet(paths.csv)
    assert list(rows[0]) == SHEET_COLUMNS  # no extra column carrying the side
    html = open(paths.html).read()
    data = json.loads(re.search(r'<script type="application/json" id="sheet-data">(.*?)</script>', html, re.S)[1])
    assert set(data) == {"sheet_id", "items"}
    assert all(set(x) == {"item_id", "prompt", "category", "A", "B"} for x in data["items"])
    assert [x["A"] for x in data["items"]] == [r["response_A"] for r in rows]
    # self-contained: no external assets, and the embedded text cannot close the script element
    assert not re.search(r"https?:|src=|<link|@import|url\(", html)
    assert html.isascii() and html.count("</script>") == 2


def test_downloaded_verdicts_file_imports(tmp_path):
    """The HTML page's download format: item_id,verdict with CRLF line ends."""
    items, truth = make_items(8)
    paths = export_sheet(items, str(tmp_path), seed=0)
    rows = read_sheet(paths.csv)
    lines = ["item_id,verdict"] + [f"{r['item_id']},{rater_choice(r, it, v)}" for r, it, v in zip(rows, items, truth)]
    (tmp_path / "verdicts.csv").write_text("\r\n".join(lines) + "\r\n")
    assert import_verdicts(str(tmp_path / "verdicts.csv"), paths.key) == truth
    # rows in any order
    shuffled = [lines[0]] + lines[:0:-1]
    (tmp_path / "v2.csv").write_text("\n".join(shuffled) + "\n")
    assert import_verdicts(str(tmp_path / "v2.csv"), paths.key) == truth


def _lines_of(text: str, item_id: str) -> list[int]:
    """1-based physical lines where rows of ``item_id`` start (found independently of the importer)."""
    return [i for i, line in enumerate(text.split("\n"), 1) if line.lstrip("\ufeff").startswith(item_id + ",")]


def _line_of(text: str, item_id: str) -> int:
    return _lines_of(text, item_id)[0]


def test_bad_rows_are_reported_together_with_lines(tmp_path):
    items, truth = make_items(10)
    paths = export_sheet(items, str(tmp_path), seed=0)
    rows = read_sheet(paths.csv)
    for r, it, v in zip(rows, items, truth):
        r["verdict"] = rater_choice(r, it, v)
    ids = [r["item_id"] for r in rows]
    rows[2]["verdict"] = "C"  # invalid
    rows[4]["verdict"] = ""  # not filled in
    rows[5]["item_id"] = "zzzzzz-0006"  # unknown id (so item 6 is also missing)
    rows.append(dict(rows[7]))  # repeated item
    del rows[8]  # item 9 missing
    write_sheet(paths.csv, rows)
    text = open(paths.csv, encoding="utf-8").read()
    with pytest.raises(VerdictError) as e:
        import_verdicts(paths.csv, paths.key)
    msg = str(e.value)
    f = paths.csv
    assert msg.startswith(f"5 problem(s) in {f}:")
    assert f"{f}:{_line_of(text, ids[2])}: item {ids[2]}: verdict 'C' is not A, B or tie" in msg
    assert f"{f}:{_line_of(text, ids[4])}: item {ids[4]} has no verdict" in msg
    assert f"{f}:{_line_of(text, 'zzzzzz-0006')}: unknown item id 'zzzzzz-0006'" in msg
    first, repeat = _lines_of(text, ids[7])
    assert f"{f}:{repeat}: item {ids[7]} already given on line {first}" in msg
    assert f"{f}: no row for 2 of 10 items: {ids[5]}, {ids[8]}" in msg
    # multi-line cells: the reported line is where the row starts, not where it ends
    assert _line_of(text, ids[2]) > 3 * 2 + 1


def test_bad_header_key_and_verdict_file(tmp_path):
    items, _ = make_items(4)
    paths = export_sheet(items, str(tmp_path), seed=0)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,answer\nx,A\n")
    with pytest.raises(VerdictError, match=r"bad\.csv:1: the header must have the columns item_id and verdict"):
        import_verdicts(str(bad), paths.key)
    bad.write_text("")
    with pytest.raises(VerdictError, match=r"bad\.csv:1: the header"):
        import_verdicts(str(bad), paths.key)
    (tmp_path / "key2.json").write_text('{"items": []}')
    with pytest.raises(VerdictError, match=r"key2\.json: not an annotation key"):
        import_verdicts(paths.csv, str(tmp_path / "key2.json"))
    with pytest.raises(VerdictError, match=r"nokey\.json: cannot read the key"):
        import_verdicts(paths.csv, str(tmp_path / "nokey.json"))
    # a verdict file from another export does not decode with this key
    other = export_sheet(make_items(4, seed=1)[0][::-1], str(tmp_path / "other"), seed=0)
    with pytest.raises(VerdictError, match="unknown item id"):
        import_verdicts(other.csv, paths.key)
    with pytest.raises(ValueError, match="no items"):
        export_sheet([], str(tmp_path / "empty"))
