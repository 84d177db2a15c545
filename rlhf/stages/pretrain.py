"""``rlhf pretrain CONFIG``: causal-LM pretraining from a config (builds the tiny default's base model).

setup -> train -> save, on the shared DeepSpeed engine:

1. Tokenise the corpus, join documents with EOS, cut into blocks of ``data.block_size`` tokens.
2. Each epoch visits the blocks in a seeded permutation; optimizer step ``s`` takes the global batch
   ``perm[s*G:(s+1)*G]``, and rank ``r`` its slice of it, in ``grad_accum`` micro-batches. The data position
   is a pure function of the step, so a resumed run sees exactly the batches an uninterrupted one would.
3. With ``train.linearity_coef`` > 0, the loss adds lambda * sum_i (1 - cos(h_i, h_{i-1})) over consecutive layers
   of the same forward pass (Razzhigaev et al. 2024; ``rlhf.algos.linearity.cosine_regularizer``), logged as
   ``linearity_reg`` beside the LM ``loss``; at 0 the step is exactly the plain LM step.
4. Checkpoints every ``run.save_steps`` (engine, optimizer, scheduler, RNG); ``resume: auto`` continues.
5. Saves a plain HF model + tokenizer, ``metrics.jsonl`` and ``summary.json`` (held-out loss/perplexity).
"""

from __future__ import annotations

import math
import os
import time

import torch
from tqdm.auto import tqdm

from rlhf import engine as E
from rlhf.algos.linearity import cosine_regularizer
from rlhf.config import ConfigError, PretrainStageConfig
from rlhf.data.text import tokenize_blocks
from rlhf.engine.guard import NonFiniteGuard
from rlhf.eval.perplexity import lm_loss, perplexity
from rlhf.models.layers import residual_stream
from rlhf.models.loading import count_params, load_causal_lm, load_tokenizer
from rlhf.outputs import MetricsLog, announce, checkpoints_dir, save_config, stage_output, write_json


def batch_indices(step: int, n: int, plan: E.BatchPlan, seed: int) -> torch.Tensor:
    """Block indices this rank uses at optimizer step ``step`` (micro x accum of them)."""
    per_epoch = n // plan.global_batch
    epoch, k = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    perm = torch.randperm(n, generator=g)
    batch = perm[k * plan.global_batch : (k + 1) * plan.global_batch]
    per_rank = plan.micro_batch * plan.grad_accum
    return batch[E.rank() * per_rank : (E.rank() + 1) * per_rank]


@stage_output("pretrain")
def run(cfg: PretrainStageConfig) -> dict:
    t_start = time.time()
    E.init_distributed()
    E.adopt_accelerate_launch(cfg.deepspeed)
    E.seed_everything(cfg.run.seed)
    out = cfg.run.output_dir
    ckpt_root = checkpoints_dir(out)
    device = E.device()

    # ---- setup ------------------------------------------------------------------------------------------
    tok = load_tokenizer(cfg.model)
    model = load_causal_lm(cfg.model, tok)
    train_blocks = tokenize_blocks(tok, cfg.data.train_files, cfg.data.block_size)  # (N, T)
    eval_blocks = tokenize_blocks(tok, cfg.data.eval_file, cfg.data.block_size) if cfg.data.eval_file else None
    plan = E.resolve_batch(cfg.deepspeed)
    per_epoch = len(train_blocks) // plan.global_batch
    if per_epoch == 0:
        raise ConfigError(
            f"deepspeed.global_batch_size: {plan.global_batch} is larger than the {len(train_blocks)} training blocks"
        )
    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * per_epoch)
    total, _ = count_params(model)
    derived = {
        "world_size": plan.world_size,
        "global_batch": plan.global_batch,
        "micro_batch": plan.micro_batch,
        "grad_accum": plan.grad_accum,
        "train_blocks": len(train_blocks),
        "tokens_per_step": plan.global_batch * cfg.data.block_size,
        "total_steps": total_steps,
        "parameters": total,
    }
    E.print0(f"[pretrain] {total / 1e6:.2f}M parameters, vocabulary {len(tok)}, {len(train_blocks)} blocks of "
             f"{cfg.data.block_size} tokens; {E.describe_engine(cfg.deepspeed, plan, cfg.train)}; {total_steps} steps"
             + (f"; cosine linearity regulariser, lambda {cfg.train.linearity_coef}" if cfg.train.linearity_coef else ""))
    ds_cfg = E.deepspeed_config(cfg.deepspeed, plan, cfg.train, model)
    engine = E.wrap_trainable(model, ds_cfg, cfg.train, total_steps, plan)

    resume_from = E.find_resume_checkpoint(cfg.run.resume, ckpt_root)
    start = 0
    if resume_from:
        start = E.load_checkpoint(resume_from, {"model": engine})["step"]
    announce("pretrain", out, resume_from)
    save_config(out, cfg, derived)
    log = MetricsLog(out, cfg.run.report_to, resume_step=start, run_name=os.path.basename(out))

    # ---- train ------------------------------------------------------------------------------------------
    engine.train()
    bar = tqdm(total=total_steps, initial=start, desc="pretrain", disable=not (E.is_main() and cfg.run.progress))
    t_last, tokens = time.time(), 0
    loss_sum, reg_sum, loss_n = 0.0, 0.0, 0
    lin_coef = cfg.train.linearity_coef
    guard = NonFiniteGuard("pretrain", lambda: (E.list_checkpoints(ckpt_root) or [None])[-1],
                           fp16=cfg.deepspeed.precision == "fp16")
    for step in range(start, total_steps):
        idx = batch_indices(step, len(train_blocks), plan, cfg.run.seed)
        for micro in idx.split(plan.micro_batch):
            x = train_blocks[micro].to(device)  # (b, T)
            if lin_coef > 0:
                with residual_stream(E.unwrap(engine)) as hidden:  # h_0 .. h_L of this forward pass, (b, T, d) each
                    loss = engine(input_ids=x, labels=x).loss
                reg, _ = cosine_regularizer(hidden)
                engine.backward(loss + lin_coef * reg)
                guard.observe_loss(reg)
                reg_sum += reg.item()
            else:
                loss = engine(input_ids=x, labels=x).loss
                engine.backward(loss)
            engine.step()
            guard.observe_loss(loss)
            loss_sum += loss.item()
            loss_n += 1
            tokens += x.numel()
        done = step + 1
        guard.check(done, E.unwrap(engine), engine.get_global_grad_norm())  # before this step is logged or saved
        if done % cfg.run.logging_steps == 0 or done == total_steps:
            now = time.time()
            local = {"loss": loss_sum / loss_n}
            if lin_coef > 0:
                local["linearity_reg"] = reg_sum / loss_n  # sum_i (1 - cos(h_i, h_{i-1})), before lambda
            m = E.all_reduce_mean(local)
            m.update(lr=engine.get_lr()[0], tokens_per_s=tokens * plan.world_size / max(now - t_last, 1e-9))
            if cfg.train.eval_steps and done % cfg.train.eval_steps == 0 and eval_blocks is not None:
                m["eval_loss"] = lm_loss(engine, eval_blocks, plan.micro_batch, device)
                engine.train()
            log.log(done, m)
            bar.set_postfix(loss=f"{m['loss']:.3f}")
            t_last, tokens, loss_sum, reg_sum, loss_n = now, 0, 0.0, 0.0, 0
        bar.update(1)
        E.report_progress(done, total_steps)
        if done % cfg.run.save_steps == 0 or done == total_steps:
            E.save_checkpoint(ckpt_root, done, {"model": engine}, {"stage": "pretrain"}, cfg.run.save_total_limit)
    bar.close()

    # ---- save -------------------------------------------------------------------------------------------
    summary: dict = {"stage": "pretrain", "steps": total_steps, "parameters": total}
    train_sample = train_blocks[: min(len(train_blocks), 64)]
    summary["train_loss"] = lm_loss(engine, train_sample, plan.micro_batch, device)
    if eval_blocks is not None:
        summary["eval_loss"] = lm_loss(engine, eval_blocks, plan.micro_batch, device)
        summary["eval_perplexity"] = perplexity(summary["eval_loss"])
    summary["wall_time_s"] = round(time.time() - t_start, 1)
    E.save_hf_model(engine, tok, out)
    if E.is_main():
        write_json(os.path.join(out, "summary.json"), summary)
    log.close()
    E.print0(f"[pretrain] done: {summary}")
    return summary
