"""The tiny embedded default: a byte-level BPE tokenizer trained on the text in ``data/``.

The tokenizer is committed in ``data/tokenizer/``; this module rebuilds it byte for byte:

    python -m rlhf.models.tiny --out data/tokenizer

The model itself is a small Llama built from ``configs/tiny/model.json`` by ``rlhf pretrain``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
PAD, EOS = "<|pad|>", "<|end|>"

# One turn per message: "<|role|>\ncontent<|end|>\n"; the generation prompt opens an assistant turn.
# The assistant's "<|end|>" is the EOS token, so a response ends exactly where the policy emits EOS.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

DEFAULT_SOURCES = [
    "data/pretrain/train.txt",
    "data/palms/values_targeted.jsonl",
    "data/palms/control.jsonl",
    "data/preferences/train.jsonl",
]


def _texts(paths: list[str]):
    for path in paths:
        if path.endswith(".jsonl"):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    for key in ("prompt", "completion", "chosen", "rejected", "text"):
                        if isinstance(row.get(key), str):
                            yield row[key]
        else:
            with open(path, encoding="utf-8") as f:
                yield from f.read().split("\n\n")


def build_tokenizer(paths: list[str], out_dir: str, vocab_size: int = 4096):
    """Train a byte-level BPE on ``paths`` and save a ``PreTrainedTokenizerFast`` with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(_texts(paths), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=SPECIAL_TOKENS[2:],
        model_max_length=1024,
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def main(argv: list[str] | None = None) -> None:
    # BPE merges with equal counts are ordered differently by different thread schedules: one thread makes the
    # build reproducible byte for byte (set before the tokenizers thread pool starts).
    os.environ["RAYON_NUM_THREADS"] = "1"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/tokenizer")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("sources", nargs="*", default=DEFAULT_SOURCES)
    args = ap.parse_args(argv)
    paths = [p for s in args.sources for p in sorted(glob.glob(s))]
    if not paths:
        raise SystemExit(f"no source files found among {args.sources}")
    tok = build_tokenizer(paths, args.out, args.vocab_size)
    print(f"wrote {args.out}: vocabulary {len(tok)}, EOS {tok.eos_token!r} ({tok.eos_token_id}), "
          f"PAD {tok.pad_token!r} ({tok.pad_token_id}), from {len(paths)} files")


if __name__ == "__main__":
    main()
