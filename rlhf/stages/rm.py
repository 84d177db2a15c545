"""``rlhf rm CONFIG``: a Bradley-Terry reward model on human preference pairs (TRL RewardTrainer).

setup -> train -> evaluate -> normalise -> save:

1. Validate and tokenise the pairs (every bad row reported with file and line; nothing trains on bad data).
2. A sequence-classification model with a scalar head, initialised from the SFT model (or any causal LM);
   dropout off; each pair's conversations are tokenised as ``tokenizer.apply_chat_template`` renders them and the
   reward is read at the last token (``rlhf.models.reward``), so plain transformers reproduces the scores.
3. Train with ``rlhf.algos.losses.pairwise_loss``: -log sigmoid(r_c - r_r - margin) (+ optional centring),
   on the shared DeepSpeed dict; optional LoRA (the head always trains). With ``data.group_by_prompt`` a batch
   element is a prompt with all its pairs (InstructGPT), each response scored once, its pairs weighted
   1 / C(K, 2) (``grouped_pairwise_loss``).
4. Evaluate on the held-out test pairs: accuracy (ties wrong), mean margin, accuracy per category, expected
   calibration error of sigmoid(r_c - r_r), and the "longer response wins" baseline beside them; the same
   accuracy on each of ``data.extra_test_files`` (e.g. judge-ranked samples of held-out prompts).
5. Fit the normalisation (gain, bias: the chosen responses of the reference pairs get mean 0, std 1) and save
   it with the model; later stages score through ``rlhf.models.reward.RewardScorer``.
"""

from __future__ import annotations

import json
import math
import os
import time

import torch

from rlhf import engine as E
from rlhf.algos.losses import grouped_pairwise_loss, pairwise_loss
from rlhf.config import RMStageConfig
from rlhf.data.formats import describe_dropped, dropped_summary, load_categories
from rlhf.data.preference import group_by_prompt, load_preferences
from rlhf.engine.hf import (
    NonFiniteLossMixin,
    save_final_model,
    train_loss,
    train_resuming,
    trainer_kwargs,
)
from rlhf.eval.reward_metrics import accuracy, bag_of_words_baseline, longer_wins_accuracy, reward_report
from rlhf.models.loading import apply_lora, count_params, load_tokenizer
from rlhf.models.reward import Normalization, load_reward_backbone, pad_right, score_sequences
from rlhf.outputs import (
    atomic_write_text,
    checkpoints_dir,
    stage_output,
    write_json,
)
from rlhf.stages import trainer_run

GROUP_COLUMNS = ["seqs", "pair_c", "pair_r", "margin"]


class GroupCollator:
    """A batch of prompt groups (``rlhf.data.preference.group_by_prompt``): every distinct response once, right-
    padded, and each pair's indices into them with weight 1 / (pairs of its prompt x prompts in the batch)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, groups: list[dict]) -> dict:
        seqs, c, r, w, m = [], [], [], [], []
        for g in groups:
            off, n = len(seqs), len(g["pair_c"])
            seqs += g["seqs"]
            c += [off + i for i in g["pair_c"]]
            r += [off + i for i in g["pair_r"]]
            w += [1.0 / (n * len(groups))] * n
            m += g["margin"]
        ids, mask = pad_right(seqs, self.pad_id)
        return {"input_ids": ids, "attention_mask": mask, "pair_c": torch.tensor(c), "pair_r": torch.tensor(r),
                "pair_w": torch.tensor(w), "margin": torch.tensor(m)}


def make_trainer_class(grouped: bool = False):
    from trl import RewardTrainer

    class BTRewardTrainer(NonFiniteLossMixin, RewardTrainer):
        """TRL's RewardTrainer with the loss from ``rlhf.algos.losses``: ``pairwise_loss`` on rows of pairs, or
        ``grouped_pairwise_loss`` on InstructGPT's prompt groups (``data.group_by_prompt``)."""

        center_coef: float = 0.0

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            # the rows are tokenised by rlhf.data.preference already; groups are not TRL's pair rows
            return dataset if grouped else super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def _set_signature_columns_if_needed(self):
            if grouped and self._signature_columns is None:
                self._signature_columns = GROUP_COLUMNS
            super()._set_signature_columns_if_needed()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            scores = outputs.logits.squeeze(-1)
            if grouped:
                loss, stats = grouped_pairwise_loss(scores, inputs["pair_c"], inputs["pair_r"], inputs["pair_w"],
                                                    inputs["margin"], self.center_coef)
            else:
                r_c, r_r = torch.chunk(scores, chunks=2)  # (B,), (B,)
                loss, stats = pairwise_loss(r_c, r_r, inputs.get("margin"), self.center_coef)
            for k, v in stats.items():
                self._metrics[mode][k].append(self.accelerator.gather_for_metrics(v).mean().item())
            return (loss, outputs) if return_outputs else loss

    return BTRewardTrainer


def pair_rewards(model, encodings: list[dict], pad_id: int, batch_size: int, device) -> tuple[list[float], list[float]]:
    chosen = score_sequences(model, [e["chosen_ids"] for e in encodings], pad_id, batch_size, device)
    rejected = score_sequences(model, [e["rejected_ids"] for e in encodings], pad_id, batch_size, device)
    return chosen, rejected


@stage_output("rm")
def run(cfg: RMStageConfig) -> dict:
    from datasets import Dataset
    from trl import RewardConfig

    t_start = time.time()
    E.init_env()
    out = cfg.run.output_dir
    ckpt_dir = checkpoints_dir(out)

    # ---- setup ------------------------------------------------------------------------------------------
    tok = load_tokenizer(cfg.model)
    categories = load_categories(cfg.data.categories_file)
    d = cfg.data
    dropped: list = []  # rows left out by data.on_invalid=drop / data.on_overlength=drop, over every file
    train_ex, train_enc = load_preferences(d.train_file, tok, categories, d.max_length, d.on_overlength,
                                           d.on_invalid, dropped)
    if d.max_train_pairs:
        train_ex, train_enc = train_ex[: d.max_train_pairs], train_enc[: d.max_train_pairs]
    n_main = len(train_enc)  # pairs of train_file: the default normalisation reference
    for extra in d.extra_train_files:
        ex, enc = load_preferences(extra, tok, categories, d.max_length, d.on_overlength, d.on_invalid, dropped)
        train_ex, train_enc = train_ex + ex, train_enc + enc
    test_ex, test_enc = (
        load_preferences(d.test_file, tok, categories, d.max_length, d.on_overlength, d.on_invalid, dropped)
        if d.test_file else ([], [])
    )
    if dropped:
        E.print0(f"[rm] {describe_dropped(dropped)}")
    extra_tests = [(f, *load_preferences(f, tok, categories, d.max_length, d.on_overlength, d.on_invalid, dropped))
                   for f in d.extra_test_files]
    if any("margin" in e for e in train_enc):  # one column for all rows: a missing margin is 0
        train_enc = [{**e, "margin": e.get("margin", 0.0)} for e in train_enc]
    groups = group_by_prompt(train_ex, train_enc) if d.group_by_prompt else None
    plan = E.resolve_batch(cfg.deepspeed)
    model = load_reward_backbone(cfg.model, tok, cfg.run.seed, cfg.reward.head_init_std)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora, task_type="SEQ_CLS")  # peft keeps the score head trainable
    total, trainable = count_params(model)
    rows = len(groups) if groups is not None else len(train_enc)  # batch elements: prompt groups or pairs
    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * -(-rows // plan.global_batch))
    derived = {
        "world_size": plan.world_size, "global_batch": plan.global_batch, "micro_batch": plan.micro_batch,
        "grad_accum": plan.grad_accum, "train_pairs": len(train_enc), "extra_train_pairs": len(train_enc) - n_main,
        "test_pairs": len(test_enc),
        "total_steps": total_steps, "parameters": total, "trainable_parameters": trainable,
    }
    if groups is not None:
        derived["train_prompt_groups"] = len(groups)
        derived["train_responses"] = sum(len(g["seqs"]) for g in groups)
    grouping = (f" in {len(groups)} prompt groups ({derived['train_responses']} distinct responses)"
                if groups is not None else "")
    E.print0(
        f"[rm] {len(train_enc)} train pairs{grouping} from {', '.join([d.train_file, *d.extra_train_files])}, "
        f"{len(test_enc)} test pairs; {total / 1e6:.2f}M parameters, {trainable / 1e6:.2f}M trainable; "
        f"{E.describe_engine(cfg.deepspeed, plan, cfg.train)}; about {total_steps} steps"
    )
    kw = trainer_kwargs(cfg.run, cfg.train, cfg.deepspeed, plan, ckpt_dir, model)
    args = RewardConfig(**kw, max_length=None, center_rewards_coefficient=None, disable_dropout=True)
    resume_from, log = trainer_run.begin("rm", cfg, derived)
    trainer_cls = make_trainer_class(grouped=groups is not None)
    trainer_cls.center_coef = cfg.reward.center_rewards_coefficient
    if groups is not None:
        train_rows, collator = groups, GroupCollator(tok.pad_token_id)
    else:
        cols = ["chosen_ids", "rejected_ids"] + (["margin"] if "margin" in train_enc[0] else [])
        train_rows, collator = [{k: e[k] for k in cols} for e in train_enc], None
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        processing_class=tok,
        data_collator=collator,
        callbacks=trainer_run.callbacks(log),
    )
    trainer_run.arm(trainer, "rm", resume_from)

    # ---- train ------------------------------------------------------------------------------------------
    train_resuming(trainer, resume_from)

    # ---- evaluate ---------------------------------------------------------------------------------------
    device = E.device()
    trained = trainer.model
    bs = plan.micro_batch * 2
    summary: dict = {"stage": "rm", "steps": trainer.state.global_step, "train_loss": train_loss(trainer)}
    if dropped or d.on_invalid == "drop":
        summary["dropped_rows"] = dropped_summary(dropped)
    # fitted once, only when there is a file to score it on
    bow = (bag_of_words_baseline([e.chosen for e in train_ex], [e.rejected for e in train_ex])
           if test_enc or extra_tests else None)
    if test_enc:
        r_c, r_r = pair_rewards(trained, test_enc, tok.pad_token_id, bs, device)
        report = reward_report(r_c, r_r, [e.chosen for e in test_ex], [e.rejected for e in test_ex],
                               [e.category for e in test_ex], cfg.reward.ece_bins)
        report["bag_of_words_baseline_accuracy"] = bow([e.chosen for e in test_ex], [e.rejected for e in test_ex])
        summary.update({f"test_{k}": v for k, v in report.items()})
        if E.is_main():  # per-pair raw scores, so anyone can check the saved model scores pairs the same way
            rows = [{"line": e.line, "category": e.category, "chosen": c, "rejected": r}
                    for e, c, r in zip(test_ex, r_c, r_r)]
            atomic_write_text(os.path.join(out, "test_scores.jsonl"), "".join(json.dumps(x) + "\n" for x in rows))
    if extra_tests:
        summary["extra_test"] = {}
        for path, ex, enc in extra_tests:
            e_c, e_r = pair_rewards(trained, enc, tok.pad_token_id, bs, device)
            summary["extra_test"][path] = {
                "pairs": len(enc), "accuracy": accuracy(e_c, e_r),
                "mean_margin": sum(c - r for c, r in zip(e_c, e_r)) / len(enc),
                "length_baseline_accuracy": longer_wins_accuracy([x.chosen for x in ex], [x.rejected for x in ex]),
                "bag_of_words_baseline_accuracy": bow([x.chosen for x in ex], [x.rejected for x in ex]),
            }
    tr_c, tr_r = pair_rewards(trained, train_enc, tok.pad_token_id, bs, device)
    summary["train_accuracy"] = sum(c > r for c, r in zip(tr_c, tr_r)) / len(tr_c)

    # ---- normalise + save -------------------------------------------------------------------------------
    ref_file = d.normalize_reference_file or d.train_file
    if ref_file == d.train_file:
        ref_chosen = tr_c[:n_main]
    else:
        _, ref_enc = load_preferences(ref_file, tok, categories, d.max_length, d.on_overlength, d.on_invalid)
        ref_chosen, _ = pair_rewards(trained, ref_enc, tok.pad_token_id, bs, device)
    norm = Normalization.fit(ref_chosen, reference=ref_file)
    summary["normalization"] = {"gain": norm.gain, "bias": norm.bias}
    save_final_model(trainer, tok, out, lora_base=(lambda: load_reward_backbone(cfg.model, tok, cfg.run.seed, cfg.reward.head_init_std)) if cfg.lora.enabled else None)
    summary["wall_time_s"] = round(time.time() - t_start, 1)
    if E.is_main():
        norm.save(out)
        write_json(os.path.join(out, "summary.json"), summary)
        log.log(summary["steps"], {k: v for k, v in summary.items() if isinstance(v, (int, float))})
    E.print0(f"[rm] done: test accuracy {summary.get('test_accuracy', float('nan')):.3f} "
             f"(longer-wins baseline {summary.get('test_length_baseline_accuracy', float('nan')):.3f}, "
             f"bag-of-words baseline {summary.get('test_bag_of_words_baseline_accuracy', float('nan')):.3f}), "
             f"ECE {summary.get('test_ece', float('nan')):.3f}; wrote {out}")
    for path, x in summary.get("extra_test", {}).items():
        E.print0(f"[rm] {path}: accuracy {x['accuracy']:.3f} on {x['pairs']} pairs "
                 f"(longer-wins baseline {x['length_baseline_accuracy']:.3f}, "
                 f"bag-of-words baseline {x['bag_of_words_baseline_accuracy']:.3f})")
    return summary
