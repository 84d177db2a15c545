"""``rlhf dpo CONFIG``: Direct Preference Optimisation (Rafailov et al. 2023) of the SFT model on preference pairs,
without a reward model (TRL DPOTrainer).

setup -> measure -> train -> measure -> save:

1. Validate and tokenise the pairs as ``rlhf rm`` does (``rlhf.data.preference``: every bad row reported with file
   and line, ``data.on_invalid``, ``data.on_overlength``): each side is the whole conversation as the chat template
   renders it, split into the prompt tokens both sides share and the response tokens DPO sums log-probabilities over.
2. The policy is the SFT model. The reference pi_ref is a frozen copy of it (full fine-tuning) or, with LoRA, the
   policy with its adapters disabled (TRL does this when it creates the adapters and is given no reference).
3. TRL's DPOTrainer minimises ``dpo.loss_type`` ('sigmoid': -log sigmoid(beta * (log pi/pi_ref (y_c) - log pi/pi_ref
   (y_r))), Rafailov et al. eq. 7; 'ipo': Azar et al. 2023 eq. 17; ...) on the shared DeepSpeed dict, with exact
   resume, the non-finite guard and progress as in SFT and RM.
4. On the test pairs, before and after training: the implicit reward r = beta * (log pi(y|x) - log pi_ref(y|x)),
   its accuracy (r_c > r_r, ties wrong), mean margin r_c - r_r and accuracy per category, and how often the policy
   itself prefers the chosen response by log-probability. At the start the policy is the reference, so every r is
   0: accuracy 0 and margin 0 there are the check that pi_ref is the starting policy.
5. Save a plain HF causal LM (LoRA: the adapter in ``adapter/`` and a merged copy at the top), ``test_logps.jsonl``
   (summed log-probabilities per test pair under the policy and the reference), ``summary.json`` last.
"""

from __future__ import annotations

import json
import math
import os
import time

import torch

from rlhf import engine as E
from rlhf.config import DPOStageConfig
from rlhf.data.formats import describe_dropped, dropped_summary, load_categories
from rlhf.data.preference import dpo_features, load_preferences
from rlhf.engine.hf import (
    NonFiniteLossMixin,
    save_final_model,
    train_loss,
    train_resuming,
    trainer_kwargs,
)
from rlhf.eval.reward_metrics import implicit_reward_report, longer_wins_accuracy
from rlhf.models.loading import (
    count_params,
    load_causal_lm,
    load_tokenizer,
    lora_parameter_count,
    peft_lora_config,
)
from rlhf.outputs import (
    atomic_write_text,
    checkpoints_dir,
    stage_output,
    write_json,
)
from rlhf.stages import trainer_run


def make_trainer_class():
    from trl import DPOTrainer

    class PairsDPOTrainer(NonFiniteLossMixin, DPOTrainer):
        """TRL's DPOTrainer on pairs already tokenised by ``rlhf.data.preference`` (TRL's own tokenisation is
        skipped: the tokens trained on are the ones validated against ``data.max_length``)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return PairsDPOTrainer


@torch.no_grad()
def response_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of the response tokens (``completion_mask``) of a TRL preference batch (chosen rows,
    then rejected rows), from the model's full logits: the forward any model runs, plain or partitioned by ZeRO-3
    (TRL's fused LM head expects ZeRO-3 parameters, which the policy only has once training has started)."""
    ids = batch["input_ids"]
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"], use_cache=False).logits[:, :-1].float()
    logp = logits.gather(-1, ids[:, 1:, None])[..., 0] - logits.logsumexp(-1)
    return (logp * batch["completion_mask"][:, 1:]).sum(dim=1).chunk(2)


def pair_logps(trainer, rows: list[dict], batch_size: int, reference: bool = False) -> tuple[list[float], list[float]]:
    """Summed log-probabilities of the chosen and rejected responses of ``rows`` given their prompts, under the
    policy or (``reference``) under the reference TRL's loss uses: its frozen copy, or the policy with its adapters
    disabled. Every rank scores every row (collective forwards under ZeRO-3)."""
    import contextlib

    from trl.trainer.utils import use_adapter

    model = trainer.model
    model.eval()
    context = contextlib.nullcontext()
    if reference and trainer.ref_model is not None:
        model = trainer.ref_model
    elif reference:  # LoRA: TRL's own switch (no adapter named "ref" exists: TRL created the adapters)
        context = use_adapter(trainer.accelerator.unwrap_model(model), adapter_name=None)
    device = trainer.accelerator.device
    chosen: list[float] = []
    rejected: list[float] = []
    with context:
        for i in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in trainer.data_collator(rows[i : i + batch_size]).items()}
            c, r = response_logps(model, batch)
            chosen += c.tolist()
            rejected += r.tolist()
    return chosen, rejected


def measure(trainer, rows: list[dict], categories: list, beta: float, batch_size: int) -> tuple[dict, tuple]:
    """The implicit-reward report on ``rows`` now, and the four lists of log-probabilities it came from."""
    logps = (*pair_logps(trainer, rows, batch_size), *pair_logps(trainer, rows, batch_size, reference=True))
    return implicit_reward_report(*logps, beta=beta, categories=categories), logps


@stage_output("dpo")
def run(cfg: DPOStageConfig) -> dict:
    from datasets import Dataset
    from trl import DPOConfig

    t_start = time.time()
    E.init_env()
    out = cfg.run.output_dir
    ckpt_dir = checkpoints_dir(out)

    # ---- setup ------------------------------------------------------------------------------------------
    tok = load_tokenizer(cfg.model)
    categories = load_categories(cfg.data.categories_file)
    d = cfg.data
    dropped: list = []  # rows left out by data.on_invalid=drop / data.on_overlength=drop, over every file

    def pairs(path: str) -> tuple[list, list[dict]]:
        ex, enc = load_preferences(path, tok, categories, d.max_length, d.on_overlength, d.on_invalid, dropped)
        return ex, [dpo_features(tok, e, x) for e, x in zip(ex, enc)]

    train_ex, train_rows = pairs(d.train_file)
    if d.max_train_pairs:
        train_ex, train_rows = train_ex[: d.max_train_pairs], train_rows[: d.max_train_pairs]
    n_main = len(train_rows)
    for extra in d.extra_train_files:
        ex, rows = pairs(extra)
        train_ex, train_rows = train_ex + ex, train_rows + rows
    test_ex, test_rows = pairs(d.test_file) if d.test_file else ([], [])
    if dropped:
        E.print0(f"[dpo] {describe_dropped(dropped)}")
    if any(e.margin is not None for e in train_ex):
        E.warn0("the pairs have 'margin' fields; DPO's loss has no margin term and ignores them")
    plan = E.resolve_batch(cfg.deepspeed)
    model = load_causal_lm(cfg.model, tok)
    # full fine-tuning: a frozen copy of the starting model; LoRA: none (the policy with its adapters disabled)
    ref_model = None if cfg.lora.enabled else load_causal_lm(cfg.model, tok)
    peft_config = peft_lora_config(model, cfg.lora) if cfg.lora.enabled else None
    total, trainable = count_params(model)
    if cfg.lora.enabled:
        trainable = lora_parameter_count(model, cfg.lora)
        total += trainable
    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * -(-len(train_rows) // plan.global_batch))
    derived = {
        "world_size": plan.world_size, "global_batch": plan.global_batch, "micro_batch": plan.micro_batch,
        "grad_accum": plan.grad_accum, "train_pairs": len(train_rows), "extra_train_pairs": len(train_rows) - n_main,
        "test_pairs": len(test_rows),
        "total_steps": total_steps, "parameters": total, "trainable_parameters": trainable,
    }
    reference = "the policy with its LoRA adapters disabled" if cfg.lora.enabled else "a frozen copy of the model"
    E.print0(
        f"[dpo] {len(train_rows)} train pairs from {', '.join([d.train_file, *d.extra_train_files])}, "
        f"{len(test_rows)} test pairs; {total / 1e6:.2f}M parameters, {trainable / 1e6:.2f}M trainable; "
        f"loss {cfg.dpo.loss_type}, beta {cfg.dpo.beta:g}, reference: {reference}; "
        f"{E.describe_engine(cfg.deepspeed, plan, cfg.train)}; about {total_steps} steps"
    )
    kw = trainer_kwargs(cfg.run, cfg.train, cfg.deepspeed, plan, ckpt_dir, model)
    args = DPOConfig(
        **kw,
        max_length=None,  # pairs were validated against data.max_length above
        pad_to_multiple_of=None,
        beta=cfg.dpo.beta,
        loss_type=[cfg.dpo.loss_type],
        label_smoothing=cfg.dpo.label_smoothing,
        disable_dropout=True,
        precompute_ref_log_probs=False,
    )
    resume_from, log = trainer_run.begin("dpo", cfg, derived)
    columns = ("prompt_ids", "chosen_ids", "rejected_ids")
    test_ds = Dataset.from_list([{k: r[k] for k in columns} for r in test_rows]) if test_rows else None
    trainer = make_trainer_class()(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list([{k: r[k] for k in columns} for r in train_rows]),
        eval_dataset=test_ds if cfg.train.eval_steps else None,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=trainer_run.callbacks(log),
    )
    trainer_run.arm(trainer, "dpo", resume_from)

    # ---- measure the starting policy, train, measure again ---------------------------------------------------
    summary: dict = {"stage": "dpo", "loss_type": cfg.dpo.loss_type, "beta": cfg.dpo.beta}
    if dropped or d.on_invalid == "drop":
        summary["dropped_rows"] = dropped_summary(dropped)
    test_cats = [e.category for e in test_ex]
    if test_rows:
        trainer.model.to(trainer.accelerator.device)
        start, _ = measure(trainer, test_rows, test_cats, cfg.dpo.beta, plan.micro_batch)
        summary.update({"test_pairs": len(test_rows), "test_accuracy_start": start["accuracy"],
                        "test_margin_start": start["margin"], "test_logp_accuracy_start": start["logp_accuracy"]})
    train_resuming(trainer, resume_from)
    summary["steps"] = trainer.state.global_step
    summary["train_loss"] = train_loss(trainer)
    if test_rows:
        end, logps = measure(trainer, test_rows, test_cats, cfg.dpo.beta, plan.micro_batch)
        summary.update({"test_accuracy": end["accuracy"], "test_margin": end["margin"],
                        "test_logp_accuracy": end["logp_accuracy"],
                        "test_accuracy_per_category": end["accuracy_per_category"],
                        "test_length_baseline_accuracy": longer_wins_accuracy([e.chosen for e in test_ex],
                                                                              [e.rejected for e in test_ex])})
        if E.is_main():  # per pair, so anyone can check the saved model (and the reference) score pairs the same way
            names = ("chosen_logp", "rejected_logp", "ref_chosen_logp", "ref_rejected_logp")
            lines = [json.dumps({"line": e.line, "category": e.category, **dict(zip(names, values)), "file": e.path})
                     + "\n" for e, *values in zip(test_ex, *logps)]
            atomic_write_text(os.path.join(out, "test_logps.jsonl"), "".join(lines))

    # ---- save -------------------------------------------------------------------------------------------
    lora_base = (lambda: load_causal_lm(cfg.model, tok)) if cfg.lora.enabled else None
    save_final_model(trainer, tok, out, lora_base=lora_base)
    summary["wall_time_s"] = round(time.time() - t_start, 1)
    if E.is_main():
        write_json(os.path.join(out, "summary.json"), summary)
    if test_rows:
        E.print0(f"[dpo] done: test accuracy of the implicit reward {summary['test_accuracy_start']:.3f} -> "
                 f"{summary['test_accuracy']:.3f}, margin {summary['test_margin_start']:+.3f} -> "
                 f"{summary['test_margin']:+.3f}; the policy prefers the chosen response (log-probability) on "
                 f"{summary['test_logp_accuracy_start']:.3f} -> {summary['test_logp_accuracy']:.3f} of the pairs; "
                 f"wrote {out}")
    else:
        E.print0(f"[dpo] done: {summary['steps']} steps, train loss {summary['train_loss']:.4f}; wrote {out}")
    return summary
