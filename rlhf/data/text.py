"""Pretraining text (the base model's corpus and the ptx term): load documents, tokenise, chunk into blocks.

Sources: ``.txt`` files (documents separated by blank lines), JSONL with a ``text`` field, or a ``datasets``
name. Documents are joined with EOS and cut into blocks of ``block_size`` tokens.
"""

from __future__ import annotations

import os

import torch

from rlhf.data.formats import DataError, Problem, read_table


def read_documents(path: str) -> list[str]:
    if path.lower().endswith(".txt"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        with open(path, "rb") as f:
            raw = f.read()
        if b"\x00" in raw:
            line = raw[: raw.index(b"\x00")].count(b"\n") + 1
            raise DataError([Problem(path, line, "binary data (a NUL byte), not UTF-8 text: is this the right file?")])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise DataError([Problem(path, line, f"not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8")]) from None
        return [d.strip() for d in text.split("\n\n") if d.strip()]
    table = read_table(path)
    problems = list(table.problems)
    docs = []
    for row in table.rows:
        text = row.data.get("text")
        if not isinstance(text, str) or not text.strip():
            problems.append(Problem(row.path, row.line, "missing or empty field 'text'"))
            continue
        docs.append(text)
    if problems:
        raise DataError(problems)
    return docs


def tokenize_blocks(tokenizer, paths: list[str] | str, block_size: int) -> torch.Tensor:
    """All documents of ``paths``, each followed by EOS, concatenated and cut into (N, block_size) blocks."""
    if isinstance(paths, str):
        paths = [paths]
    docs = [d for p in paths for d in read_documents(p)]
    what = ", ".join(paths)
    if not docs:
        raise DataError([Problem(what, 0, f"no text (0 tokens), fewer than one block of {block_size} tokens "
                                          "(the block size): add text to the file")])
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // block_size
    if n == 0:
        raise DataError([Problem(what, 0, f"{len(ids)} tokens, fewer than one block of {block_size} tokens (the "
                                          "block size): add text or lower the block size")])
    return torch.tensor(ids[: n * block_size], dtype=torch.long).view(n, block_size)  # (N, block_size)
