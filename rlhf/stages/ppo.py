"""``rlhf ppo CONFIG``: PPO-ptx against a reward model (or a reward function), as InstructGPT eq. 2.

    maximise  E_(x,y)~pi [ r(x, y) - beta * log(pi(y|x) / pi_SFT(y|x)) ]  +  gamma * E_x~D_pretrain [ log pi(x) ]

Four models: actor (from SFT, trainable), critic (value head initialised from the reward model, its normalisation
folded in; trainable, its own optimizer and learning rate), reference (frozen SFT; with LoRA, the actor with adapters
disabled) and the reward model (frozen; scores normalised with the gain/bias saved by ``rlhf rm``).

Per iteration (numbers refer to the implementation details in docs/ppo.md; the numbered table of
N+ details is docs/references.md, "PPO implementation details"):
 1. take the iteration's prompts (a seeded permutation; the data position is a function of the iteration);
    rank r takes the r-th contiguous slice;
 2. generate with the actor: KV cache, left padding, sampling settings from config, stop at EOS, truncate after it;
    under ZeRO-3 the actor's parameters are gathered once for the whole rollout (``ppo.gather_for_generation``);
 3. score the whole conversation (the prompt's messages + the decoded response) on the tokens the chat template
    gives for it, as ``rlhf rm`` trained and tested the reward model (``rlhf.models.reward``), or give it to the
    reward function (``messages=``, ``rlhf.rewards``); optional clipping; a response without EOS has
    ``missing_eos_penalty`` subtracted (detail 4; or its score replaced, ``missing_eos_score``);
 4. log-probs of actor and reference (logits / temperature, detail 3), values of the critic; then every rank
    all-gathers the rollout (token ids, masks, scores, log-probs, values: small next to the models), so steps 5-7
    see the whole rollout in global order on every rank;
 5. per-token reward r_t = -beta * KL_t, plus the score on the last token (detail 5); optional whitening;
 6. GAE (gamma, lambda) and whitened advantages (details 6, 7), whitened over the whole rollout;
 7. ``ppo_epochs`` passes over minibatches, drawn by a permutation seeded by (seed, iteration, epoch) over global
    episode indices, so minibatch k is the same set of episodes at any world size (rank r trains on its r-th
    slice of it; with greedy generation a 2-process run reproduces a 1-process one); per micro-batch one backward of
    policy_loss + ptx_coef * ptx_loss (actor) and vf_coef * value_loss (critic): the two models share no
    parameters, so this equals one backward of their sum; one optimizer step per model per minibatch
    (InstructGPT accumulates the PPO and ptx gradients; DeepSpeed-Chat takes two steps); with
    ``ppo.ptx_linearity_coef`` the ptx term is ptx_coef * (LM loss + lambda * sum_i (1 - cos(h_i, h_{i-1}))), the
    cosine regulariser of Razzhigaev et al. 2024 on the ptx batch's forward pass (logged as ptx_linearity_reg);
 8. update the KL controller; optional EMA of the actor; metrics, samples, checkpoint.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import time

import torch
from tqdm.auto import tqdm

from rlhf import engine as E
from rlhf.algos.advantages import gae, kl_per_token, masked_mean, per_token_rewards, whiten
from rlhf.algos.kl_control import AdaptiveKLController, FixedKLController
from rlhf.algos.linearity import cosine_regularizer
from rlhf.algos.losses import policy_loss, ptx_loss, value_loss
from rlhf.algos.scores import missing_eos_gain, shape_scores
from rlhf.config import PPOStageConfig
from rlhf.data.formats import load_categories
from rlhf.data.sft import load_prompts
from rlhf.data.text import tokenize_blocks
from rlhf.errors import TrainingError
from rlhf.eval.perplexity import lm_loss
from rlhf.models.critic import critic_files, load_critic
from rlhf.models.layers import residual_stream
from rlhf.models.loading import apply_lora, count_params, load_causal_lm, load_tokenizer
from rlhf.models.policy import (
    Rollout,
    entropy_from_logits,
    generate,
    logprobs_from_logits,
    response_logits,
    response_texts,
    token_values,
)
from rlhf.models.reward import Normalization, conversation_scores, load_reward_backbone
from rlhf.outputs import (
    MetricsLog,
    announce,
    atomic_write_text,
    checkpoints_dir,
    save_config,
    stage_output,
    write_json,
)

# ----------------------------------------------------------------------------------------------------------
# Data and reward sources
# ----------------------------------------------------------------------------------------------------------


def load_reward_function(spec: str):
    """'package.module:function' -> the callable (user code only by an explicit import path, never eval)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"reward.function: cannot import module {module_name!r}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise AttributeError(f"reward.function: {module_name!r} has no callable {attr!r}")
    return fn


def takes_messages(fn) -> bool:
    """Whether a reward function accepts the prompt conversations (a ``messages`` parameter or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(q.name == "messages" or q.kind is inspect.Parameter.VAR_KEYWORD for q in params)


def rollout_scores(reward_model, tok, rollout: Rollout, rows: list[dict], device) -> torch.Tensor:
    """Raw reward-model scores (B,) of a rollout: each prompt conversation (``rows[i]["messages"]``) with the
    decoded response, on the tokens the chat template gives for that conversation, as ``rlhf rm`` trained and
    tested the model and as ``RewardScorer`` and plain transformers score it (``rlhf.models.reward`` says why the
    text is rendered again rather than a suffix appended to the generated ids)."""
    return conversation_scores(reward_model, tok, [r["messages"] for r in rows], response_texts(tok, rollout),
                               rollout.has_eos.tolist(), device)


def iteration_indices(it: int, n: int, batch: int, seed: int) -> list[int]:
    """Global prompt indices of iteration ``it``: consecutive slices of seeded per-epoch permutations."""
    out: list[int] = []
    start = it * batch
    while len(out) < batch:
        epoch, offset = divmod(start + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
        out += perm[offset : offset + batch - len(out)]
    return out


def minibatch_indices(seed: int, it: int, epoch: int, rollout: int, mini: int, world: int, rank: int) -> list[list[int]]:
    """This rank's episodes (indices into the gathered rollout) for each minibatch of one PPO epoch.

    The epoch's permutation is drawn from a generator seeded by (seed, iteration, epoch) alone, over global episode
    indices, so global minibatch k is the same set of episodes whatever the world size; rank r takes its r-th slice.
    """
    g = torch.Generator().manual_seed((seed * 100_003 + it) * 1_009 + epoch)
    perm = torch.randperm(rollout, generator=g).tolist()
    local = mini // world
    return [perm[k + rank * local : k + (rank + 1) * local] for k in range(0, rollout, mini)]


class EMA:
    """Exponential moving average of the actor's weights (InstructGPT App. C: decay 0.992), kept on CPU in fp32."""

    def __init__(self, decay: float, state: dict[str, torch.Tensor] | None):
        self.decay = decay
        self.shadow = {k: v.float().clone() for k, v in state.items()} if state is not None else None

    def update(self, state: dict[str, torch.Tensor] | None) -> None:
        if state is None:  # not rank 0
            return
        for k, v in state.items():
            self.shadow[k].mul_(self.decay).add_(v.float(), alpha=1 - self.decay)


# ----------------------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------------------


@stage_output("ppo")
def run(cfg: PPOStageConfig) -> dict:
    t_start = time.time()
    E.init_distributed()
    E.adopt_accelerate_launch(cfg.deepspeed)
    E.seed_everything(cfg.run.seed)
    out = cfg.run.output_dir
    ckpt_root = checkpoints_dir(out)
    device = E.device()
    p, g = cfg.ppo, cfg.generation
    world = E.world_size()

    # ---- setup: data -----------------------------------------------------------------------------------
    tok = load_tokenizer(cfg.model)
    categories = load_categories(cfg.data.categories_file)
    prompt_ids, prompt_rows = load_prompts(cfg.data.prompt_file, tok, categories, cfg.data.max_prompt_length)
    heldout = (
        load_prompts(cfg.data.heldout_prompt_file, tok, categories, cfg.data.max_prompt_length)
        if cfg.data.heldout_prompt_file else None
    )
    ptx_blocks = tokenize_blocks(tok, cfg.data.ptx_files, cfg.data.ptx_block_size) if p.ptx_coef > 0 else None
    ptx_eval = tokenize_blocks(tok, cfg.data.ptx_eval_file, cfg.data.ptx_block_size) if cfg.data.ptx_eval_file else None
    if p.mini_batch_size % world and cfg.deepspeed.lr_scaling == "none":
        raise ValueError(f"ppo.mini_batch_size: {p.mini_batch_size} episodes cannot be split evenly over {world} processes")
    # The minibatch is DeepSpeed's global batch. With deepspeed.lr_scaling it grows with the world size, and the
    # rollout with it, so an iteration keeps its number of optimizer steps.
    plan = E.resolve_batch(cfg.deepspeed, global_batch=p.mini_batch_size)
    mini_bs = plan.global_batch
    minis_per_epoch = p.rollout_batch_size // p.mini_batch_size
    rollout_bs = minis_per_epoch * mini_bs
    local_rollout, local_mini = rollout_bs // world, mini_bs // world
    steps_per_iter = p.ppo_epochs * minis_per_epoch
    total_steps = p.iterations * steps_per_iter

    # ---- setup: models ---------------------------------------------------------------------------------
    actor = load_causal_lm(cfg.model, tok)
    reference = None
    if cfg.lora.enabled:
        actor = apply_lora(actor, cfg.lora)  # the reference is this model with its adapters disabled
    else:
        reference = load_causal_lm(cfg.model, tok)
    reward_model, norm, reward_fn = None, Normalization(), None
    if cfg.reward.model:
        rm_cfg = dataclasses.replace(cfg.model, name_or_path=cfg.reward.model, tokenizer="", from_config="", gguf_file="")
        reward_model = load_reward_backbone(rm_cfg, tok)
        norm = Normalization.load(cfg.reward.model)
    else:
        reward_fn = load_reward_function(cfg.reward.function)
    fn_takes_messages = reward_fn is not None and takes_messages(reward_fn)
    critic_path = cfg.critic.model or cfg.reward.model
    if not critic_path:
        raise ValueError("critic.model: required when the reward is a function (the critic needs a value head)")
    critic_cfg = dataclasses.replace(cfg.model, name_or_path=critic_path, tokenizer="", from_config="", gguf_file="")
    critic, value_offset = load_critic(critic_cfg, tok, cfg.run.seed)  # values on the normalised reward's scale

    ds_cfg = E.deepspeed_config(cfg.deepspeed, plan, cfg.train, actor)
    actor_e = E.wrap_trainable(actor, ds_cfg, cfg.train, total_steps, plan)
    critic_train = dataclasses.replace(cfg.train, learning_rate=cfg.critic.learning_rate)
    critic_e = E.wrap_trainable(critic, E.deepspeed_config(cfg.deepspeed, plan, critic_train, critic), critic_train,
                                total_steps, plan)
    ref_e = E.wrap_frozen(reference, cfg.deepspeed, plan, device) if reference is not None else None
    rm_e = E.wrap_frozen(reward_model, cfg.deepspeed, plan, device) if reward_model is not None else None
    kl_ctl = (AdaptiveKLController(p.kl_coef, p.kl_target, p.kl_horizon) if p.adaptive_kl
              else FixedKLController(p.kl_coef))
    ema = EMA(p.ema_decay, E.gathered_state_dict(actor_e)) if p.ema_decay > 0 else None

    total, trainable = count_params(actor_e)
    derived = {
        "world_size": world, "rollout_batch": rollout_bs, "rollout_per_rank": local_rollout, "mini_batch": mini_bs,
        "micro_batch": plan.micro_batch, "grad_accum": plan.grad_accum, "optimizer_steps_per_iteration": steps_per_iter,
        "total_optimizer_steps": total_steps, "train_prompts": len(prompt_ids), "actor_parameters": total,
        "actor_trainable_parameters": trainable, "actor_learning_rate": cfg.train.learning_rate * plan.lr_scale,
        "critic_learning_rate": cfg.critic.learning_rate * plan.lr_scale,
        "episodes": p.iterations * rollout_bs,
    }
    ptx_desc = f"ptx_coef {p.ptx_coef}" + (f" (cosine regulariser {p.ptx_linearity_coef})" if p.ptx_linearity_coef else "")
    E.print0(
        f"[ppo] {len(prompt_ids)} prompts; {p.iterations} iterations x {rollout_bs} episodes, "
        f"{p.ppo_epochs} epoch(s) of minibatches of {mini_bs}; {E.describe_engine(cfg.deepspeed, plan, cfg.train)}; "
        f"critic learning rate {cfg.critic.learning_rate * plan.lr_scale:.3g}; "
        f"{ptx_desc}, beta {p.kl_coef}{' (adaptive)' if p.adaptive_kl else ''}; "
        f"reward: {cfg.reward.model or cfg.reward.function}"
    )

    # ---- resume -----------------------------------------------------------------------------------------
    resume_from = E.find_resume_checkpoint(cfg.run.resume, ckpt_root)
    start_it, nonfinite, ptx_start = 0, 0, None
    if resume_from:
        state = E.load_checkpoint(resume_from, {"actor": actor_e, "critic": critic_e})
        start_it, nonfinite = state["step"], state["nonfinite"]
        ptx_start = state.get("ptx_heldout_loss_start")  # measured before the first iteration: kept for the summary
        kl_ctl.load_state_dict(state["kl"])
        if ema is not None:
            ema.shadow = E.load_checkpoint_tensors(resume_from, "ema") if E.is_main() else None
    announce("ppo", out, resume_from)
    save_config(out, cfg, derived)
    log = MetricsLog(out, cfg.run.report_to, resume_step=start_it, run_name=os.path.basename(out),
                     config=dataclasses.asdict(cfg))
    samples_path = os.path.join(out, "samples.jsonl")
    gold = None
    if p.gold_rubric:  # rule-based "gold" judge logged beside the proxy reward (over-optimisation shows)
        from rlhf.eval.rubric import RubricJudge

        gold = RubricJudge(p.gold_rubric)

    def reference_logits(rollout: Rollout) -> torch.Tensor:
        if ref_e is not None:
            return response_logits(ref_e, rollout)
        with E.unwrap(actor_e).disable_adapter():
            return response_logits(actor_e, rollout)

    def scores_of(rollout: Rollout, rows: list[dict]) -> torch.Tensor:
        if rm_e is not None:
            return norm(rollout_scores(rm_e, tok, rollout, rows, device))
        texts = response_texts(tok, rollout)
        kw = {"messages": [r["messages"] for r in rows]} if fn_takes_messages else {}
        raw = reward_fn([r["prompt"] for r in rows], texts, [r["category"] for r in rows], **kw)
        return torch.tensor([float(x) for x in raw], dtype=torch.float32, device=device)

    def rollout_batch(ids: list[list[int]], rows: list[dict]) -> tuple[Rollout, torch.Tensor, float]:
        t0 = time.time()
        actor_e.eval()
        with E.gathered_for_generation(actor_e, p.gather_for_generation) as synced:
            r = generate(E.unwrap(actor_e), ids, tok, g.max_new_tokens, g.temperature, g.top_k, g.top_p, g.do_sample,
                         device, synced_gpus=synced)
        return r, scores_of(r, rows), time.time() - t0

    # ---- train ------------------------------------------------------------------------------------------
    if ptx_eval is not None and start_it == 0:
        ptx_start = lm_loss(actor_e, ptx_eval, plan.micro_batch, device)
    bar = tqdm(total=p.iterations, initial=start_it, desc="ppo", disable=not (E.is_main() and cfg.run.progress))
    for it in range(start_it, p.iterations):
        t_it = time.time()
        idx = iteration_indices(it, len(prompt_ids), rollout_bs, cfg.run.seed)
        mine = idx[E.rank() * local_rollout : (E.rank() + 1) * local_rollout]

        # 2-3. generate and score this rank's share of the rollout
        roll, raw_scores, t_gen = rollout_batch([prompt_ids[i] for i in mine], [prompt_rows[i] for i in mine])
        t0 = time.time()
        with torch.no_grad():
            # 4. log-probs of actor and reference, values of the critic
            mask = roll.response_mask.float()  # (L, R)
            logits = response_logits(actor_e, roll)  # (L, R, V)
            old_logp = logprobs_from_logits(logits, roll.response_ids, g.temperature)
            ent_tok = entropy_from_logits(logits, g.temperature) * mask
            del logits
            ref_logp = logprobs_from_logits(reference_logits(roll), roll.response_ids, g.temperature)
            old_values = token_values(critic_e, roll) * mask
            # the whole rollout on every rank, episodes in global order (rank-major): advantages are whitened over
            # all of it and global minibatch k is the same set of episodes whatever the world size
            pad = tok.pad_token_id
            roll = Rollout(E.all_gather_rows(roll.prompt_ids, pad, pad_left=True),
                           E.all_gather_rows(roll.prompt_mask, 0, pad_left=True),
                           E.all_gather_rows(roll.response_ids, pad), E.all_gather_rows(roll.response_mask, 0),
                           E.all_gather_rows(roll.has_eos))
            raw_scores, old_logp, ref_logp, old_values, ent_tok = (
                E.all_gather_rows(x) for x in (raw_scores, old_logp, ref_logp, old_values, ent_tok))
            mask = roll.response_mask.float()  # (B, R), B = rollout_bs
            entropy = masked_mean(ent_tok, mask)
            scores = shaped_scores(cfg, raw_scores, roll.has_eos)
            warn_if_missing_eos_pays(cfg, it, raw_scores, roll.has_eos, scores)
            # 5. per-token rewards, 6. GAE and whitened advantages
            kl = kl_per_token(old_logp, ref_logp, p.kl_estimator) * mask  # (B, R)
            rewards, non_score = per_token_rewards(scores, kl, mask, kl_ctl.value)
            if p.whiten_rewards:
                rewards = whiten(rewards, mask, shift_mean=False)
            advantages, returns = gae(rewards, old_values, mask, p.gamma, p.lam)
            advantages = whiten(advantages, mask)
        t_fwd = time.time() - t0
        finite = all(bool(torch.isfinite(x).all()) for x in (scores, old_logp, ref_logp, old_values, advantages))

        # 7. PPO epochs over minibatches
        t0 = time.time()
        stats: dict[str, list[float]] = {}
        skipped = 0
        if not finite:  # the same decision on every rank: they hold the same gathered rollout
            skipped = 1
            nonfinite += 1
            E.warn0(f"iteration {it + 1}: non-finite scores, log-probs or values; update skipped ({nonfinite} in a row)")
        else:
            actor_e.train()
            critic_e.train()
            for epoch in range(p.ppo_epochs):
                minibatches = minibatch_indices(cfg.run.seed, it, epoch, rollout_bs, mini_bs, world, E.rank())
                for k, share in enumerate(minibatches):
                    step = it * steps_per_iter + epoch * minis_per_epoch + k  # global optimizer step
                    for a, m0 in enumerate(range(0, local_mini, plan.micro_batch)):
                        mb = share[m0 : m0 + plan.micro_batch]
                        sub = Rollout(roll.prompt_ids[mb], roll.prompt_mask[mb], roll.response_ids[mb],
                                      roll.response_mask[mb], roll.has_eos[mb])
                        mmask = mask[mb]
                        logp = logprobs_from_logits(response_logits(actor_e, sub), sub.response_ids, g.temperature)
                        pg, pg_stats = policy_loss(logp, old_logp[mb], advantages[mb], mmask, p.clip_range)
                        actor_loss = pg
                        if ptx_blocks is not None:
                            # micro-slot q of the step over all ranks: the same ptx blocks whatever the world size
                            n, q = p.ptx_batch_size, E.rank() * plan.grad_accum + a
                            first = (step * world * plan.grad_accum + q) * n
                            x = ptx_blocks[[(first + j) % len(ptx_blocks) for j in range(n)]].to(device)
                            if p.ptx_linearity_coef > 0:
                                # h_0 .. h_L of the same forward pass, (n, T, d) each
                                with residual_stream(E.unwrap(actor_e)) as hidden:
                                    lm = ptx_loss(actor_e(input_ids=x, use_cache=False).logits, x)
                                reg, _ = cosine_regularizer(hidden)
                                actor_loss = actor_loss + p.ptx_coef * (lm + p.ptx_linearity_coef * reg)
                                stats.setdefault("ptx_linearity_reg", []).append(reg.item())
                            else:
                                lm = ptx_loss(actor_e(input_ids=x, use_cache=False).logits, x)
                                actor_loss = actor_loss + p.ptx_coef * lm
                            stats.setdefault("ptx_loss", []).append(lm.item())
                        vpred = token_values(critic_e, sub)
                        vf, vf_stats = value_loss(vpred, old_values[mb], returns[mb], mmask, p.clip_range_value)
                        critic_loss = p.vf_coef * vf
                        ok = torch.tensor(float(torch.isfinite(actor_loss) and torch.isfinite(critic_loss)), device=device)
                        if world > 1:
                            torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
                        if ok.item() < 1:
                            # keep DeepSpeed's accumulation in step with a zero-gradient backward of a finite forward
                            skipped += 1
                            nonfinite += 1
                            E.warn0(f"iteration {it + 1}: non-finite loss; micro-batch skipped ({nonfinite} in a row)")
                            one = sub.input_ids[:1, -1:]
                            actor_loss = actor_e(input_ids=one).logits.sum() * 0.0
                            critic_loss = critic_e(input_ids=one).logits.sum() * 0.0
                        else:
                            for key, v in {**pg_stats, **vf_stats}.items():
                                stats.setdefault(key, []).append(v.item())
                            stats.setdefault("policy_loss", []).append(pg.item())
                            stats.setdefault("value_loss", []).append(vf.item())
                        actor_e.backward(actor_loss)
                        actor_e.step()
                        critic_e.backward(critic_loss)
                        critic_e.step()
                        if nonfinite >= p.max_nonfinite:
                            raise TrainingError(
                                f"ppo: {nonfinite} non-finite losses/scores in a row (ppo.max_nonfinite) at iteration "
                                f"{it + 1}; stopping. "
                                "Lower the learning rate or check the reward; the last checkpoint is intact."
                            )
            if not skipped:
                nonfinite = 0
        if nonfinite >= p.max_nonfinite:
            raise TrainingError(f"ppo: {nonfinite} non-finite scores in a row (ppo.max_nonfinite) at iteration "
                                f"{it + 1}; stopping. Check the reward; the last checkpoint is intact.")
        t_train = time.time() - t0

        # 8. KL controller, EMA, metrics (rollout statistics are global already; loss statistics are averaged)
        kl_sum = masked_mean(kl.sum(1), torch.ones_like(scores)).item()  # mean over episodes of summed KL
        beta = kl_ctl.value
        kl_ctl.update(kl_sum, rollout_bs)
        if ema is not None:
            ema.update(E.gathered_state_dict(actor_e))
        resp_len = mask.sum(1)
        local = {
            "score_mean": raw_scores.mean().item(),
            "score_std": raw_scores.std().item() if len(raw_scores) > 1 else 0.0,
            "reward_mean": scores.mean().item(),
            "kl": kl_sum,
            "nonscore_reward": non_score.sum(1).mean().item(),
            "entropy": entropy.item(),
            "response_length": resp_len.mean().item(),
            "eos_rate": roll.has_eos.float().mean().item(),
            **{k: sum(v) / len(v) for k, v in stats.items()},
        }
        m = E.all_reduce_mean(local)
        resp_tokens = float(resp_len.sum().item())
        it_time = time.time() - t_it
        m.update(
            beta=beta, lr=actor_e.get_lr()[0], skipped_updates=skipped,
            time_generation=t_gen, time_forward=t_fwd, time_train=t_train, time_iteration=it_time,
            tokens_per_s=resp_tokens / max(it_time, 1e-9), generation_tokens_per_s=resp_tokens / max(t_gen, 1e-9),
        )
        texts = tok.batch_decode(roll.response_ids, skip_special_tokens=True)
        if gold is not None:
            rows_it = [prompt_rows[i] for i in idx]
            gold_scores = [gold.score(r["prompt"], t, r.get("category"), bool(e))
                           for r, t, e in zip(rows_it, texts, roll.has_eos.tolist())]
            m["gold_rubric_mean"] = sum(gold_scores) / len(gold_scores)
        done = it + 1
        log.log(done, m)
        bar.set_postfix(score=f"{m['score_mean']:.2f}", kl=f"{m['kl']:.2f}",
                        **({"gold": f"{m['gold_rubric_mean']:.2f}"} if gold is not None else {}))
        bar.update(1)
        E.report_progress(done, p.iterations, "iteration")
        if done % p.sample_every == 0 or done == p.iterations:
            write_samples(samples_path, done, [prompt_rows[i] for i in idx], texts, scores.tolist())
        if done % cfg.run.save_steps == 0 or done == p.iterations:
            E.save_checkpoint(
                ckpt_root, done, {"actor": actor_e, "critic": critic_e},
                {"stage": "ppo", "nonfinite": nonfinite, "kl": kl_ctl.state_dict(), "ptx_heldout_loss_start": ptx_start},
                cfg.run.save_total_limit,
                tensors={"ema": ema.shadow} if ema is not None and E.is_main() else None,
            )
    bar.close()

    # ---- evaluate + save --------------------------------------------------------------------------------
    summary: dict = {"stage": "ppo", "iterations": p.iterations, "ptx_coef": p.ptx_coef, "kl_coef": p.kl_coef}
    if ptx_eval is not None:
        summary["ptx_heldout_loss_end"] = lm_loss(actor_e, ptx_eval, plan.micro_batch, device)
        if ptx_start is not None:
            summary["ptx_heldout_loss_start"] = ptx_start
    if heldout is not None and rm_e is not None:
        summary.update(heldout_rewards(heldout, actor_e, ref_e, rm_e, norm, tok, cfg, device))
    save_policy(actor_e, tok, out, cfg)
    E.save_hf_model(critic_e, tok, os.path.join(out, "critic"), extra_files=critic_files(value_offset))
    if ema is not None:
        save_ema(ema, actor_e, tok, os.path.join(out, "ema"))
    summary["wall_time_s"] = round(time.time() - t_start, 1)
    if E.is_main():
        write_json(os.path.join(out, "summary.json"), summary)
    log.close()
    E.print0(f"[ppo] done: {json.dumps(summary)}")
    return summary


@torch.no_grad()
def heldout_rewards(heldout, actor_e, ref_e, rm_e, norm, tok, cfg, device) -> dict:
    """Mean normalised reward on held-out prompts: the final actor against the starting (reference) model.

    Every rank scores the full held-out set (small); sampling uses a fixed seed so both models see the same draw.
    """
    g = cfg.generation
    ids, rows = heldout
    out = {}
    models = {"final": actor_e}
    if ref_e is not None:
        models["start"] = ref_e
    for name, model in models.items():
        rng = torch.get_rng_state()
        torch.manual_seed(cfg.run.seed + 12345)
        scores = []
        for i in range(0, len(ids), 32):
            with E.gathered_for_generation(model, cfg.ppo.gather_for_generation) as synced:
                r = generate(E.unwrap(model), ids[i : i + 32], tok, g.max_new_tokens, g.temperature, g.top_k, g.top_p,
                             g.do_sample, device, synced_gpus=synced)
            s = norm(rollout_scores(rm_e, tok, r, rows[i : i + 32], device))
            s = shaped_scores(cfg, s, r.has_eos)
            scores += s.tolist()
        torch.set_rng_state(rng)
        out[f"heldout_reward_{name}"] = sum(scores) / len(scores)
    return out


def shaped_scores(cfg: PPOStageConfig, scores: torch.Tensor, has_eos: torch.Tensor) -> torch.Tensor:
    """The configured clipping and missing-EOS treatment (rlhf.algos.scores.shape_scores) of scores (B,)."""
    p = cfg.ppo
    if not p.penalize_missing_eos:
        return shape_scores(scores, has_eos, clip=cfg.reward.clip)
    return shape_scores(scores, has_eos, p.missing_eos_penalty, p.missing_eos_score, cfg.reward.clip)


def warn_if_missing_eos_pays(cfg: PPOStageConfig, it: int, raw: torch.Tensor, has_eos: torch.Tensor,
                             shaped: torch.Tensor) -> None:
    """Warn when the replacement score (ppo.missing_eos_score) raised the responses without EOS on average."""
    gain, n = missing_eos_gain(raw, has_eos, shaped, cfg.reward.clip)
    if gain > 0:
        mean = float(shaped[~has_eos.bool()].mean()) - gain
        E.warn0(
            f"iteration {it + 1}: ppo.missing_eos_score {cfg.ppo.missing_eos_score:g} sits above the mean score "
            f"{mean:.3g} of the {n} response(s) without EOS it replaces, so not ending with EOS pays on this "
            "reward's scale and the policy learns not to stop. Set ppo.missing_eos_score=null to subtract "
            "ppo.missing_eos_penalty from the score instead, or set missing_eos_score below the reward's typical scores"
        )


def write_samples(path: str, iteration: int, rows: list[dict], responses: list[str], scores: list[float], n: int = 4):
    """Append a few prompt/response/score rows to samples.jsonl and print them as a table (rank 0)."""
    if not E.is_main():
        return
    picked = list(zip(rows, responses, scores))[:n]
    with open(path, "a", encoding="utf-8") as f:
        for row, resp, score in picked:
            f.write(json.dumps({"iteration": iteration, "prompt": row["prompt"], "category": row["category"],
                                "response": resp, "score": score}) + "\n")
    width = 60
    lines = [f"[ppo] samples at iteration {iteration}", f"{'prompt':<{width}} | {'response':<{width}} | score"]
    for row, resp, score in picked:
        lines.append(f"{row['prompt'][:width]:<{width}} | {resp.replace(chr(10), ' ')[:width]:<{width}} | {score:+.3f}")
    tqdm.write("\n".join(lines))


def save_ema(ema: EMA, actor_e, tok, path: str) -> None:
    if not E.is_main():
        E.barrier()
        return
    module = E.unwrap(actor_e)
    os.makedirs(path, exist_ok=True)
    module.save_pretrained(path, state_dict={k: v for k, v in ema.shadow.items()}, safe_serialization=True)
    tok.save_pretrained(path)
    atomic_write_text(os.path.join(path, "README.txt"), f"EMA of the actor's weights, decay {ema.decay}\n")
    E.barrier()


def save_policy(actor_e, tok, out: str, cfg: PPOStageConfig) -> None:
    """The final actor as a plain HF model in ``out``; with LoRA the adapter in ``out/adapter`` and a merged copy
    at the top (built on rank 0 from the gathered weights, so it works under every ZeRO stage)."""
    if not cfg.lora.enabled:
        E.save_hf_model(actor_e, tok, out)
        return
    sd = E.gathered_state_dict(actor_e)
    if E.is_main():
        peft_model = apply_lora(load_causal_lm(cfg.model, tok), cfg.lora)
        peft_model.load_state_dict(sd)
        peft_model.save_pretrained(os.path.join(out, "adapter"))
        E.save_hf_model(peft_model.merge_and_unload(), tok, out, single_process=True)
    E.barrier()
