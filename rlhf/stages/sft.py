"""``rlhf sft CONFIG``: supervised fine-tuning, loss on completion tokens only (TRL SFTTrainer).

setup -> train -> save:

1. Validate and tokenise the data (``rlhf data check`` runs the same code); every bad row is reported with
   file and line and training refuses to start. Prompts are rendered with the chat template exactly as the
   policy sees them at generation time; completions end with EOS.
2. Hold out a seeded ``data.eval_fraction`` slice; measure completion loss on it before and after training.
3. TRL's SFTTrainer trains with the shared DeepSpeed dict (``rlhf.engine.hf``); optional LoRA adapters.
4. Save a plain HF model + tokenizer (LoRA: the adapter in ``adapter/`` and a merged copy at the top),
   ``config.yaml``, ``metrics.jsonl``, ``summary.json``; ``checkpoints/`` lets ``resume: auto`` continue.
"""

from __future__ import annotations

import math
import os
import random
import time

from rlhf import engine as E
from rlhf.config import SFTStageConfig
from rlhf.data.formats import describe_dropped, dropped_summary, load_categories
from rlhf.data.sft import SFTCollator, load_sft_or_raise
from rlhf.engine.hf import (
    NonFiniteLossMixin,
    save_final_model,
    train_loss,
    train_resuming,
    trainer_kwargs,
)
from rlhf.eval.perplexity import completion_loss
from rlhf.models.loading import apply_lora, count_params, load_causal_lm, load_tokenizer
from rlhf.outputs import checkpoints_dir, stage_output, write_json
from rlhf.stages import trainer_run


def split_holdout(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """Seeded split: (train, held-out). The held-out slice never trains."""
    idx = list(range(len(items)))
    random.Random(seed).shuffle(idx)
    n_eval = int(round(fraction * len(items)))
    held = set(idx[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


@stage_output("sft")
def run(cfg: SFTStageConfig) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    t_start = time.time()
    E.init_env()
    out = cfg.run.output_dir
    ckpt_dir = checkpoints_dir(out)

    # ---- setup ------------------------------------------------------------------------------------------
    tok = load_tokenizer(cfg.model)
    categories = load_categories(cfg.data.categories_file)
    dropped: list = []
    examples, encodings = load_sft_or_raise(
        cfg.data.train_file, tok, categories, cfg.data.max_length, cfg.data.on_overlength, cfg.data.on_invalid, dropped
    )
    if dropped:
        E.print0(f"[sft] {describe_dropped(dropped)}")
    train_enc, eval_enc = split_holdout(encodings, cfg.data.eval_fraction, cfg.run.seed)
    plan = E.resolve_batch(cfg.deepspeed)
    model = load_causal_lm(cfg.model, tok)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    total, trainable = count_params(model)
    steps_per_epoch = -(-len(train_enc) // plan.global_batch)  # the last, partial batch is a step too
    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * steps_per_epoch)
    derived = {
        "world_size": plan.world_size,
        "global_batch": plan.global_batch,
        "micro_batch": plan.micro_batch,
        "grad_accum": plan.grad_accum,
        "train_rows": len(train_enc),
        "heldout_rows": len(eval_enc),
        "total_steps": total_steps,
        "parameters": total,
        "trainable_parameters": trainable,
    }
    E.print0(
        f"[sft] {len(examples)} rows from {cfg.data.train_file} ({len(train_enc)} train, {len(eval_enc)} held out); "
        f"{total / 1e6:.2f}M parameters, {trainable / 1e6:.2f}M trainable; "
        f"{E.describe_engine(cfg.deepspeed, plan, cfg.train)}; about {total_steps} steps"
    )

    args = SFTConfig(
        **trainer_kwargs(cfg.run, cfg.train, cfg.deepspeed, plan, ckpt_dir, model),
        max_length=None,  # rows were validated against data.max_length above
        dataset_kwargs={"skip_prepare_dataset": True},
        packing=False,
    )
    resume_from, log = trainer_run.begin("sft", cfg, derived)
    collator = SFTCollator(tok.pad_token_id)

    class GuardedSFTTrainer(NonFiniteLossMixin, SFTTrainer):
        pass

    trainer = GuardedSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_enc),
        eval_dataset=Dataset.from_list(eval_enc) if eval_enc else None,
        processing_class=tok,
        data_collator=collator,
        callbacks=trainer_run.callbacks(log),
    )
    trainer_run.arm(trainer, "sft", resume_from)

    # ---- train ------------------------------------------------------------------------------------------
    summary: dict = {"stage": "sft", "train_rows": len(train_enc), "heldout_rows": len(eval_enc)}
    if dropped or cfg.data.on_invalid == "drop":
        summary["dropped_rows"] = dropped_summary(dropped)
    device = E.device()
    if eval_enc:  # completion loss of the starting model on the held-out slice
        summary["heldout_loss_before"] = completion_loss(model.to(device), eval_enc, collator, plan.micro_batch, device)
    train_resuming(trainer, resume_from)
    summary["train_loss"] = train_loss(trainer)
    summary["steps"] = trainer.state.global_step
    if eval_enc:
        summary["heldout_loss_after"] = completion_loss(trainer.model, eval_enc, collator, plan.micro_batch, device)

    # ---- save -------------------------------------------------------------------------------------------
    save_final_model(trainer, tok, out, lora_base=(lambda: load_causal_lm(cfg.model, tok)) if cfg.lora.enabled else None)
    summary["wall_time_s"] = round(time.time() - t_start, 1)
    if E.is_main():
        write_json(os.path.join(out, "summary.json"), summary)
    E.print0(f"[sft] done: {summary}")
    return summary
