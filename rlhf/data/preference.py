"""Preference pairs: every format of docs/design.md ("Data formats"), validated row by row, tokenised for the reward model.

Accepted rows (strings or ``[{role, content}]`` message lists everywhere):

- explicit prompt: ``{prompt, chosen, rejected}``
- implicit prompt: ``{chosen, rejected}`` sharing a prefix; the prompt is the shared prefix
- Anthropic HH transcripts: ``{chosen, rejected}`` strings with ``\\n\\nHuman: `` / ``\\n\\nAssistant: `` turns
  (multi-turn); the prompt is the shared conversation, the response the last assistant turn
- optional ``margin`` (float, Llama 2's margin loss) and ``category``

A pair is tokenised as the chat template renders each whole conversation (the prompt messages + the assistant's
response, no generation prompt: ``tokenizer.apply_chat_template(conversation)``, the TRL and RewardBench
convention), and the reward is read at its last token; see :func:`encode_conversation`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rlhf.data.formats import (
    DataError,
    Messages,
    Problem,
    Row,
    as_messages,
    category_error,
    read_table,
    text_error,
)
from rlhf.data.sft import encode_prompt

# a turn marker; "Assistant:" at the very end is an empty last turn (real HH data has such rows)
HH_TURN = re.compile(r"\n\n(Human|Assistant):(?: |(?=\s*$))")


@dataclass
class PrefExample:
    """One validated preference pair."""

    path: str
    line: int
    prompt: Messages
    chosen: str
    rejected: str
    margin: float | None
    category: str | None


def parse_hh(text: str) -> Messages:
    """Split an Anthropic HH transcript into messages (Human -> user, Assistant -> assistant)."""
    parts = HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise ValueError("not an HH transcript: expected turns starting with '\\n\\nHuman: ' / '\\n\\nAssistant: '")
    msgs = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        msgs.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return msgs


def _is_hh(value) -> bool:
    return isinstance(value, str) and value.startswith(("\n\nHuman:", "Human:")) and "Assistant:" in value


def split_conversation(chosen: Messages, rejected: Messages) -> tuple[Messages, str, str] | str:
    """Implicit prompt: shared prefix of two conversations + their last assistant turns, or why not."""
    for name, conv in (("chosen", chosen), ("rejected", rejected)):
        if conv[-1]["role"] != "assistant":
            return f"the last turn of '{name}' must be the assistant's response"
    if chosen[:-1] != rejected[:-1]:
        return "prompts differ: 'chosen' and 'rejected' do not share the conversation before the last response"
    if not chosen[:-1]:
        return "no prompt: the conversation has only the response"
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def _strip_hh_prefix(value: str) -> str:
    return value if value.startswith("\n\n") else "\n\n" + value


def parse_preference_row(row: Row, categories: dict) -> PrefExample | str:
    d = row.data
    for name in ("chosen", "rejected"):
        err = text_error(d, name)
        if err:
            return err
    chosen, rejected = d["chosen"], d["rejected"]
    if "prompt" in d and d["prompt"] is not None:
        err = text_error(d, "prompt")
        if err:
            return err
        prompt = as_messages(d["prompt"])
        responses = []
        for name, value in (("chosen", chosen), ("rejected", rejected)):
            if isinstance(value, list):
                if value[-1]["role"] != "assistant":
                    return f"the last message of '{name}' must be the assistant's response"
                if len(value) > 1:
                    return f"'{name}' must hold only the response when 'prompt' is given"
                value = value[-1]["content"]
            responses.append(value)
        c, r = responses
    else:
        if _is_hh(chosen) or _is_hh(rejected):
            try:
                cm, rm = parse_hh(_strip_hh_prefix(chosen)), parse_hh(_strip_hh_prefix(rejected))
            except ValueError as e:
                return str(e)
        elif isinstance(chosen, list) and isinstance(rejected, list):
            cm, rm = as_messages(chosen), as_messages(rejected)
        elif isinstance(chosen, str) and isinstance(rejected, str):
            return "no 'prompt' field and not an HH transcript: give {prompt, chosen, rejected}"
        else:
            return "'chosen' and 'rejected' must both be strings or both message lists"
        split = split_conversation(cm, rm)
        if isinstance(split, str):
            return split
        prompt, c, r = split
    if not c.strip() or not r.strip():
        return f"empty {'chosen' if not c.strip() else 'rejected'} response"
    if c.strip() == r.strip():
        return "chosen and rejected responses are identical"
    margin = d.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
        return f"field 'margin' must be a number, got {type(margin).__name__}"
    if margin is not None and not math.isfinite(margin):
        return f"field 'margin' must be a finite number, got {margin!r}"
    err = category_error(d, categories)
    if err:
        return err
    return PrefExample(row.path, row.line, prompt, c, r, None if margin is None else float(margin), d.get("category"))


def encode_conversation(tokenizer, prompt: Messages, response: str, complete: bool = True) -> list[int]:
    """The tokens a reward model scores: the conversation ``prompt + [assistant: response]`` exactly as
    ``tokenizer.apply_chat_template`` tokenises it (no generation prompt), so the reward is read at the same last
    token as by anyone scoring the saved model with plain transformers. With the shipped template that is
    ``... <|assistant|>\n{response}<|end|>\n``, the template's newline after the EOS.

    ``complete=False`` (a response cut off before EOS) renders the assistant turn left open
    (``continue_final_message``), without the template's end of turn.
    """
    conv = [*prompt, {"role": "assistant", "content": response}]
    enc = tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True, continue_final_message=not complete)
    return list(enc["input_ids"])


def encode_pair(tokenizer, ex: PrefExample) -> dict:
    """``chosen_ids`` / ``rejected_ids``: each conversation as :func:`encode_conversation` renders it (and
    ``margin`` when given); ``prompt_len`` is the length of the prompt with its generation prompt."""
    p = encode_prompt(tokenizer, ex.prompt)
    out = {
        "chosen_ids": encode_conversation(tokenizer, ex.prompt, ex.chosen),
        "rejected_ids": encode_conversation(tokenizer, ex.prompt, ex.rejected),
        "prompt_len": len(p),
    }
    if ex.margin is not None:
        out["margin"] = ex.margin
    return out


def dpo_features(tokenizer, ex: PrefExample, enc: dict) -> dict:
    """A pair as TRL's DPOTrainer takes it: ``prompt_ids`` (the tokens both conversations of :func:`encode_pair` share
    with the prompt rendered with its generation prompt) and the ``chosen_ids`` / ``rejected_ids`` after them, whose
    log-probabilities DPO sums. ``enc`` may be truncated (``fit_length``); the prompt then still fits."""
    prompt = encode_prompt(tokenizer, ex.prompt)
    c, r = enc["chosen_ids"], enc["rejected_ids"]
    n = 0
    while n < len(prompt) and n < len(c) and n < len(r) and prompt[n] == c[n] == r[n]:
        n += 1
    return {"prompt_ids": c[:n], "chosen_ids": c[n:], "rejected_ids": r[n:]}


def group_by_prompt(examples: list[PrefExample], encodings: list[dict]) -> list[dict]:
    """InstructGPT's batch elements: the pairs of one file that share a prompt, with each distinct response once.

    Returns, in order of first appearance, ``{"seqs": [ids, ...], "pair_c": [i, ...], "pair_r": [j, ...],
    "margin": [m, ...]}`` where pair p prefers ``seqs[pair_c[p]]`` to ``seqs[pair_r[p]]`` (a missing margin is 0).
    A pair whose prompt appears once is an element of its own. Responses are matched by their tokens (a truncated
    pair's cut responses count as what the model scores)."""
    groups: dict[tuple, dict] = {}
    index: dict[tuple, dict] = {}
    for ex, enc in zip(examples, encodings):
        key = (ex.path, repr(ex.prompt))
        g = groups.setdefault(key, {"seqs": [], "pair_c": [], "pair_r": [], "margin": []})
        seen = index.setdefault(key, {})
        for name, col in (("chosen_ids", "pair_c"), ("rejected_ids", "pair_r")):
            ids = tuple(enc[name])
            if ids not in seen:
                seen[ids] = len(g["seqs"])
                g["seqs"].append(list(ids))
            g[col].append(seen[ids])
        g["margin"].append(float(enc.get("margin", 0.0)))
    return list(groups.values())


def fit_length(enc: dict, max_length: int, on_overlength: str) -> dict | str | None:
    """Apply ``on_overlength`` to a pair: the pair, a truncated pair, None (dropped) or an error string."""
    n = max(len(enc["chosen_ids"]), len(enc["rejected_ids"]))
    if n <= max_length:
        return enc
    if on_overlength == "error":
        return f"{n} tokens after tokenisation, over max_length {max_length} (would be refused; set on_overlength)"
    if on_overlength == "drop":
        return None
    if enc["prompt_len"] >= max_length:
        return f"the prompt alone fills max_length {max_length}"
    # truncation keeps the prompt and cuts the responses; the reward is read at the last kept token
    return {**enc, "chosen_ids": enc["chosen_ids"][:max_length], "rejected_ids": enc["rejected_ids"][:max_length]}


def load_preferences(
    path: str, tokenizer, categories: dict, max_length: int, on_overlength: str = "error",
    on_invalid: str = "error", dropped: list[Problem] | None = None,
) -> tuple[list[PrefExample], list[dict]]:
    """Validate + tokenise a preference file; raise :class:`DataError` listing every bad row.

    With ``on_invalid='drop'`` invalid rows (unparsable, prompts that differ, empty responses ...) are left out
    instead and appended to ``dropped`` (with over-length pairs dropped by ``on_overlength='drop'``).
    """
    table = read_table(path)
    invalid = list(table.problems)
    problems: list[Problem] = []
    examples, encodings = [], []
    for row in table.rows:
        ex = parse_preference_row(row, categories)
        if isinstance(ex, str):
            invalid.append(Problem(row.path, row.line, ex))
            continue
        enc = fit_length(encode_pair(tokenizer, ex), max_length, on_overlength)
        if isinstance(enc, str):
            problems.append(Problem(row.path, row.line, enc))
            continue
        if enc is None:
            if dropped is not None:
                dropped.append(Problem(row.path, row.line, f"over max_length {max_length} (data.on_overlength=drop)"))
            continue
        examples.append(ex)
        encodings.append(enc)
    if on_invalid == "drop":
        if dropped is not None:
            dropped.extend(invalid)
    else:
        problems += invalid
    if problems:
        hint = "fix them, or set data.on_invalid=drop to train without them" if invalid and on_invalid != "drop" else ""
        raise DataError(sorted(problems, key=lambda p: p.line), hint=hint)
    if not examples:
        raise DataError([Problem(path, 0, "no usable pairs" + (" (every row was dropped)" if table.rows else ""))])
    if dropped is not None:
        dropped.sort(key=lambda p: (p.path, p.line))
    return examples, encodings


def check_preference_rows(rows: list[Row], report, tokenizer, categories: dict, max_length: int | None) -> None:
    """``rlhf data check`` for preference files (fills ``report``)."""
    longer = valid = 0
    for row in rows:
        ex = parse_preference_row(row, categories)
        if isinstance(ex, str):
            report.problems.append(Problem(row.path, row.line, ex))
            continue
        if tokenizer is not None:
            enc = encode_pair(tokenizer, ex)
            n = max(len(enc["chosen_ids"]), len(enc["rejected_ids"]))
            if max_length is not None and n > max_length:
                fate = "truncated" if enc["prompt_len"] < max_length else "dropped (the prompt alone is too long)"
                report.problems.append(Problem(
                    row.path, row.line,
                    f"{n} tokens after tokenisation, over max_length {max_length}: refused by default; with "
                    f"data.on_overlength=truncate it would be {fate}, with drop it would be dropped",
                ))
        else:
            n = max(len(ex.chosen.split()), len(ex.rejected.split()))
        report.categories[ex.category or "(none)"] += 1
        report.lengths.append(n)
        valid += 1
        longer += len(ex.chosen) > len(ex.rejected)
    if valid:
        report.notes.append(
            f"'longer response wins' baseline accuracy: {longer / valid:.3f} (length must not give the answer away)"
        )


__all__ = ["DataError", "PrefExample", "dpo_features", "encode_conversation", "encode_pair", "group_by_prompt",
           "load_preferences", "parse_hh", "parse_preference_row"]
