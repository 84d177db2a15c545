"""SFT and prompt data: validation, chat-template rendering, tokenisation with a completion mask, collator.

The prompt is rendered with the tokenizer's chat template and ``add_generation_prompt=True`` (exactly what the
policy sees at generation time); the completion is tokenised on its own and ends with EOS. Loss is on the
completion tokens (and that EOS) only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.data.formats import (
    DataError,
    Messages,
    Problem,
    Row,
    as_messages,
    as_text,
    category_error,
    read_table,
    text_error,
)

IGNORE_INDEX = -100


@dataclass
class SFTExample:
    """One validated SFT row."""

    path: str
    line: int
    prompt: Messages
    completion: str
    category: str | None


def parse_sft_row(row: Row, categories: dict) -> SFTExample | str:
    """An :class:`SFTExample`, or the reason the row is bad."""
    d = row.data
    if "messages" in d:
        err = text_error(d, "messages")
        if err:
            return err
        msgs = d["messages"]
        if not isinstance(msgs, list):
            return "field 'messages' must be a list of {role, content} messages"
        if msgs[-1]["role"] != "assistant":
            return "the last message of 'messages' must be the assistant's response"
        if len(msgs) < 2:
            return "'messages' needs at least one message before the assistant's response"
        prompt, completion = as_messages(msgs[:-1]), msgs[-1]["content"]
    else:
        for name in ("prompt", "completion"):
            err = text_error(d, name)
            if err:
                return err
        if isinstance(d["completion"], list) and any(m["role"] != "assistant" for m in d["completion"]):
            return "'completion' messages must all have role 'assistant'"
        prompt, completion = as_messages(d["prompt"]), as_text(d["completion"])
    err = category_error(d, categories)
    if err:
        return err
    return SFTExample(row.path, row.line, prompt, completion, d.get("category"))


def parse_prompt_row(row: Row, categories: dict) -> tuple[Messages, str | None] | str:
    d = row.data
    err = text_error(d, "prompt") or category_error(d, categories)
    if err:
        return err
    return as_messages(d["prompt"]), d.get("category")


def render_prompt(tokenizer, prompt: Messages) -> str:
    """The prompt as the model sees it before its response (chat template + generation prompt)."""
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, prompt: Messages) -> list[int]:
    return tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]


def encode_completion(tokenizer, completion: str) -> list[int]:
    """Completion tokens followed by EOS (the model must learn to stop)."""
    return tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def encode_sft(tokenizer, ex: SFTExample) -> dict[str, list[int]]:
    """``input_ids`` = prompt + completion + EOS; ``completion_mask`` is 1 on completion tokens (and EOS)."""
    p = encode_prompt(tokenizer, ex.prompt)
    c = encode_completion(tokenizer, ex.completion)
    return {"input_ids": p + c, "completion_mask": [0] * len(p) + [1] * len(c)}


def load_sft(
    path: str,
    tokenizer=None,
    categories: dict | None = None,
    max_length: int | None = None,
    on_overlength: str = "error",
    on_invalid: str = "error",
    dropped: list[Problem] | None = None,
) -> tuple[list[SFTExample], list[dict], list[Problem]]:
    """Validate and tokenise an SFT file.

    Returns (examples, encodings, problems). Over-length rows are problems when ``on_overlength='error'``,
    truncated (completion end) with 'truncate', dropped with 'drop'. Invalid rows are problems, or with
    ``on_invalid='drop'`` left out; rows left out either way are appended to ``dropped`` when it is given.
    """
    table = read_table(path)
    problems = [] if on_invalid == "drop" else list(table.problems)
    if on_invalid == "drop" and dropped is not None:
        dropped.extend(table.problems)
    examples, encodings = [], []
    for row in table.rows:
        ex = parse_sft_row(row, categories or {})
        if isinstance(ex, str):
            if on_invalid == "drop":
                if dropped is not None:
                    dropped.append(Problem(row.path, row.line, ex))
            else:
                problems.append(Problem(row.path, row.line, ex))
            continue
        if tokenizer is None:
            examples.append(ex)
            continue
        enc = encode_sft(tokenizer, ex)
        n = len(enc["input_ids"])
        if max_length is not None and n > max_length:
            if on_overlength == "error":
                problems.append(Problem(row.path, row.line, f"{n} tokens after tokenisation, over max_length {max_length}"))
                continue
            if on_overlength == "drop":
                if dropped is not None:
                    dropped.append(Problem(row.path, row.line, f"over max_length {max_length} (data.on_overlength=drop)"))
                continue
            if sum(1 - m for m in enc["completion_mask"]) >= max_length:
                problems.append(Problem(row.path, row.line, f"the prompt alone fills max_length {max_length}"))
                continue
            enc = {k: v[:max_length] for k, v in enc.items()}
        examples.append(ex)
        encodings.append(enc)
    problems.sort(key=lambda p: p.line)
    if dropped is not None:
        dropped.sort(key=lambda p: (p.path, p.line))
    return examples, encodings, problems


def load_sft_or_raise(path: str, tokenizer, categories: dict, max_length: int, on_overlength: str,
                      on_invalid: str = "error", dropped: list[Problem] | None = None):
    dropped = [] if dropped is None else dropped
    examples, encodings, problems = load_sft(path, tokenizer, categories, max_length, on_overlength, on_invalid,
                                             dropped)
    if problems:
        invalid = any("max_length" not in p.reason for p in problems)
        hint = "fix them, or set data.on_invalid=drop to train without them" if invalid and on_invalid != "drop" else ""
        raise DataError(problems, hint=hint)
    if not examples:
        raise DataError([Problem(path, 0, "no rows" + (" left: every row was dropped" if dropped else ""))])
    return examples, encodings


@dataclass
class SFTCollator:
    """Pads a batch of ``{input_ids, completion_mask}`` (right padding) and builds labels.

    ``labels`` = input_ids where completion_mask is 1, else -100: every prompt token and every pad is ignored,
    no completion token is.
    """

    pad_token_id: int

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(batch), n), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        attn = torch.zeros((len(batch), n), dtype=torch.long)  # (B, T)
        for i, b in enumerate(batch):
            x = torch.tensor(b["input_ids"], dtype=torch.long)
            m = torch.tensor(b["completion_mask"], dtype=torch.bool)
            ids[i, : len(x)] = x
            attn[i, : len(x)] = 1
            labels[i, : len(x)] = torch.where(m, x, torch.full_like(x, IGNORE_INDEX))
        return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def load_prompts(path: str, tok, categories: dict, max_len: int) -> tuple[list[list[int]], list[dict]]:
    """Tokenised prompts and their rows ({prompt text, category}); bad rows raise DataError with file:line."""
    table = read_table(path)
    problems = list(table.problems)
    ids, rows = [], []
    for row in table.rows:
        parsed = parse_prompt_row(row, categories)
        if isinstance(parsed, str):
            problems.append(Problem(row.path, row.line, parsed))
            continue
        msgs, cat = parsed
        enc = encode_prompt(tok, msgs)
        if len(enc) > max_len:
            problems.append(Problem(row.path, row.line, f"{len(enc)} prompt tokens, over max_prompt_length {max_len}"))
            continue
        ids.append(enc)
        rows.append({"messages": msgs, "prompt": msgs[-1]["content"], "category": cat})
    if problems:
        raise DataError(problems)
    if not ids:
        raise DataError([Problem(path, 0, "no prompts")])
    return ids, rows
