"""``rlhf ppo CONFIG``: PPO-ptx against a reward model (or a reward function), as InstructGPT eq. 2.

    maximise  E_(x,y)~pi [ r(x, y) - beta * log(pi(y|x) / pi_SFT(y|x)) ]  +  gamma * E_x~D_pretrain [ log pi(x) ]

Four models (:func:`load_models`): actor (from SFT, trainable), critic (value head initialised from the reward
model, its normalisation folded in; trainable, its own optimizer and learning rate), reference (frozen SFT; with
LoRA, the actor with adapters disabled) and the reward model (frozen; scores normalised with the gain/bias saved by
``rlhf rm``). With a critic-free ``ppo.advantage_estimator`` (rloo, grpo: rlhf.algos.critic_free) there is no
critic: each prompt is answered ``ppo.samples_per_prompt`` times and the group is the baseline.

One iteration of :func:`run` is :func:`collect_rollout` (generate, score, log-probs and values, rewards and
advantages over the whole rollout), :func:`ppo_update` (``ppo_epochs`` passes over minibatches), then
:func:`iteration_metrics`, samples and a checkpoint. "Detail N" in a docstring is item N of the implementation
details in docs/ppo.md; "N+ detail N" is the numbered table of Huang et al. 2024 in docs/references.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from rlhf import engine as E
from rlhf.algos.advantages import gae, kl_per_token, masked_mean, per_token_rewards, whiten
from rlhf.algos.critic_free import grpo_advantages, grpo_loss, rloo_advantages
from rlhf.algos.kl_control import AdaptiveKLController, FixedKLController
from rlhf.algos.linearity import cosine_regularizer
from rlhf.algos.losses import policy_loss, ptx_loss, value_loss
from rlhf.algos.scores import missing_eos_gain, shape_scores
from rlhf.config import PPOStageConfig
from rlhf.data.formats import load_categories
from rlhf.data.order import PtxSampler, grouped, iteration_indices, minibatch_indices
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
from rlhf.rewards import load_reward_function, takes_messages

__all__ = ["run", "collect_rollout", "ppo_update", "iteration_indices", "minibatch_indices", "rollout_scores",
           "takes_messages", "load_reward_function"]


def rollout_scores(reward_model, tok, rollout: Rollout, rows: list[dict], device) -> torch.Tensor:
    """Raw reward-model scores (B,) of a rollout: each prompt conversation (``rows[i]["messages"]``) with the
    decoded response, on the tokens the chat template gives for that conversation, as ``rlhf rm`` trained and
    tested the model and as ``RewardScorer`` and plain transformers score it (detail 1; ``rlhf.models.reward``
    says why the text is rendered again rather than a suffix appended to the generated ids)."""
    return conversation_scores(reward_model, tok, [r["messages"] for r in rows], response_texts(tok, rollout),
                               rollout.has_eos.tolist(), device)


class EMA:
    """Exponential moving average of the actor's weights (detail 14; InstructGPT App. C: decay 0.992), kept on CPU
    in fp32."""

    def __init__(self, decay: float, state: dict[str, torch.Tensor] | None):
        self.decay = decay
        self.shadow = {k: v.float().clone() for k, v in state.items()} if state is not None else None

    def update(self, state: dict[str, torch.Tensor] | None) -> None:
        if state is None:  # not rank 0
            return
        for k, v in state.items():
            self.shadow[k].mul_(self.decay).add_(v.float(), alpha=1 - self.decay)


# ----------------------------------------------------------------------------------------------------------
# Set-up: sizes, data, models
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Sizes:
    """Episode counts of one iteration. The minibatch is DeepSpeed's global batch: with ``deepspeed.lr_scaling`` it
    grows with the world size, and the rollout with it, so an iteration keeps its number of optimizer steps."""

    plan: E.BatchPlan
    world: int
    rollout: int  # episodes per iteration, all ranks
    mini: int  # episodes per minibatch (one optimizer step), all ranks
    minis_per_epoch: int
    steps_per_iter: int
    total_steps: int
    samples: int = 1  # ppo.samples_per_prompt: consecutive episodes answer one prompt

    @property
    def local_rollout(self) -> int:
        return self.rollout // self.world

    @property
    def local_mini(self) -> int:
        return self.mini // self.world

    @property
    def prompts(self) -> int:
        """Prompts per iteration, all ranks: each answered ``samples`` times."""
        return self.rollout // self.samples


def batch_sizes(cfg: PPOStageConfig, world: int) -> Sizes:
    p = cfg.ppo
    if p.mini_batch_size % world and cfg.deepspeed.lr_scaling == "none":
        raise ValueError(f"ppo.mini_batch_size: {p.mini_batch_size} episodes cannot be split evenly over {world} processes")
    plan = E.resolve_batch(cfg.deepspeed, global_batch=p.mini_batch_size)
    minis = p.rollout_batch_size // p.mini_batch_size
    steps = p.ppo_epochs * minis
    sizes = Sizes(plan, world, minis * plan.global_batch, plan.global_batch, minis, steps, p.iterations * steps,
                  p.samples_per_prompt)
    if sizes.local_rollout % sizes.samples:
        raise ValueError(f"ppo.samples_per_prompt: {sizes.samples} responses per prompt do not divide the "
                         f"{sizes.local_rollout} episodes of each of {world} processes (a prompt's group stays on one)")
    return sizes


@dataclasses.dataclass
class PromptData:
    ids: list[list[int]]  # tokenised prompts
    rows: list[dict]  # their rows: prompt, messages, category
    heldout: tuple[list[list[int]], list[dict]] | None
    ptx: PtxSampler | None  # the pretraining blocks of the ptx term (ppo.ptx_coef > 0)
    ptx_eval: torch.Tensor | None  # held-out pretraining blocks, for the loss at start and end


def load_data(cfg: PPOStageConfig, tok, sizes: Sizes) -> PromptData:
    d, p = cfg.data, cfg.ppo
    categories = load_categories(d.categories_file)
    ids, rows = load_prompts(d.prompt_file, tok, categories, d.max_prompt_length)
    heldout = load_prompts(d.heldout_prompt_file, tok, categories, d.max_prompt_length) if d.heldout_prompt_file else None
    ptx = None
    if p.ptx_coef > 0:
        ptx = PtxSampler(tokenize_blocks(tok, d.ptx_files, d.ptx_block_size), p.ptx_batch_size, sizes.world,
                         sizes.plan.grad_accum)
    ptx_eval = tokenize_blocks(tok, d.ptx_eval_file, d.ptx_block_size) if d.ptx_eval_file else None
    return PromptData(ids, rows, heldout, ptx, ptx_eval)


@dataclasses.dataclass
class Models:
    """The four PPO models as engines (no critic with a critic-free estimator), and the reward's source (a reward
    model or a function)."""

    actor: Any
    critic: Any | None  # None with ppo.advantage_estimator rloo or grpo
    reference: Any | None  # None with LoRA: the actor with its adapters disabled
    reward_model: Any | None
    norm: Normalization
    reward_fn: Callable | None
    value_offset: float  # the reward normalisation folded into the critic (saved with it)

    @property
    def engines(self) -> dict:
        """The trainable engines, as checkpoints hold them."""
        return {"actor": self.actor, **({"critic": self.critic} if self.critic is not None else {})}

    def reference_logits(self, rollout: Rollout, response_only: bool = False) -> torch.Tensor:
        if self.reference is not None:
            return response_logits(self.reference, rollout, response_only=response_only)
        with E.unwrap(self.actor).disable_adapter():
            return response_logits(self.actor, rollout, response_only=response_only)

    def scores(self, rollout: Rollout, rows: list[dict], tok, device) -> torch.Tensor:
        """Raw scores (B,): the normalised reward model's, or the reward function's (``messages=`` when it takes
        them)."""
        if self.reward_model is not None:
            return self.norm(rollout_scores(self.reward_model, tok, rollout, rows, device))
        kw = {"messages": [r["messages"] for r in rows]} if takes_messages(self.reward_fn) else {}
        raw = self.reward_fn([r["prompt"] for r in rows], response_texts(tok, rollout), [r["category"] for r in rows],
                             **kw)
        return torch.tensor([float(x) for x in raw], dtype=torch.float32, device=device)


def _beside(cfg: PPOStageConfig, path: str):
    """The model config for another model directory (reward model, critic) loaded next to the actor."""
    return dataclasses.replace(cfg.model, name_or_path=path, tokenizer="", from_config="", gguf_file="")


def load_models(cfg: PPOStageConfig, tok, sizes: Sizes, device) -> Models:
    """Actor, reference, reward model or function, and critic (detail 12: initialised from the reward model, or from
    ``critic.model``; none with a critic-free estimator), wrapped as engines: actor and critic trainable with their
    own optimizers."""
    actor = load_causal_lm(cfg.model, tok)
    reference = None
    if cfg.lora.enabled:
        actor = apply_lora(actor, cfg.lora)  # the reference is this model with its adapters disabled
    else:
        reference = load_causal_lm(cfg.model, tok)
    reward_model, norm, reward_fn = None, Normalization(), None
    if cfg.reward.model:
        reward_model = load_reward_backbone(_beside(cfg, cfg.reward.model), tok)
        norm = Normalization.load(cfg.reward.model)
    else:
        reward_fn = load_reward_function(cfg.reward.function)
    plan = sizes.plan
    actor_e = E.wrap_trainable(actor, E.deepspeed_config(cfg.deepspeed, plan, cfg.train, actor), cfg.train,
                               sizes.total_steps, plan)
    critic_e, value_offset = None, 0.0
    if cfg.ppo.advantage_estimator == "gae":
        critic_path = cfg.critic.model or cfg.reward.model
        if not critic_path:
            raise ValueError("critic.model: required when the reward is a function (the critic needs a value head)")
        critic, value_offset = load_critic(_beside(cfg, critic_path), tok, cfg.run.seed)  # on the normalised scale
        critic_train = dataclasses.replace(cfg.train, learning_rate=cfg.critic.learning_rate)
        critic_e = E.wrap_trainable(critic, E.deepspeed_config(cfg.deepspeed, plan, critic_train, critic),
                                    critic_train, sizes.total_steps, plan)
    elif cfg.critic.model:
        E.warn0(f"critic.model is not used: ppo.advantage_estimator {cfg.ppo.advantage_estimator} has no critic")
    ref_e = E.wrap_frozen(reference, cfg.deepspeed, plan, device) if reference is not None else None
    rm_e = E.wrap_frozen(reward_model, cfg.deepspeed, plan, device) if reward_model is not None else None
    return Models(actor_e, critic_e, ref_e, rm_e, norm, reward_fn, value_offset)


def describe(cfg: PPOStageConfig, sizes: Sizes, data: PromptData, models: Models) -> dict:
    """Print the run's shape on rank 0; return the derived sizes recorded in config.yaml."""
    p = cfg.ppo
    total, trainable = count_params(models.actor)
    lr_scale = sizes.plan.lr_scale
    ptx_desc = f"ptx_coef {p.ptx_coef}" + (f" (cosine regulariser {p.ptx_linearity_coef})" if p.ptx_linearity_coef else "")
    critic = (f"critic learning rate {cfg.critic.learning_rate * lr_scale:.3g}" if models.critic is not None else
              f"{p.advantage_estimator}, no critic")
    group = f" ({sizes.prompts} prompts x {sizes.samples})" if sizes.samples > 1 else ""
    E.print0(
        f"[ppo] {len(data.ids)} prompts; {p.iterations} iterations x {sizes.rollout} episodes{group}, "
        f"{p.ppo_epochs} epoch(s) of minibatches of {sizes.mini}; "
        f"{E.describe_engine(cfg.deepspeed, sizes.plan, cfg.train)}; {critic}; "
        f"{ptx_desc}, beta {p.kl_coef}{' (adaptive)' if p.adaptive_kl else ''}; "
        f"reward: {cfg.reward.model or cfg.reward.function}"
    )
    return {
        "world_size": sizes.world, "rollout_batch": sizes.rollout, "rollout_per_rank": sizes.local_rollout,
        "mini_batch": sizes.mini, "micro_batch": sizes.plan.micro_batch, "grad_accum": sizes.plan.grad_accum,
        "optimizer_steps_per_iteration": sizes.steps_per_iter, "total_optimizer_steps": sizes.total_steps,
        "train_prompts": len(data.ids), "actor_parameters": total, "actor_trainable_parameters": trainable,
        "actor_learning_rate": cfg.train.learning_rate * lr_scale,
        "critic_learning_rate": cfg.critic.learning_rate * lr_scale if models.critic is not None else 0.0,
        "episodes": p.iterations * sizes.rollout, "prompts_per_iteration": sizes.prompts,
    }


# ----------------------------------------------------------------------------------------------------------
# One iteration: collect a rollout, then update
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Experience:
    """A rollout with everything the update needs, gathered from every rank in global (rank-major) order.

    B episodes (the whole rollout), R response tokens; per-token tensors are (B, R) and zero past each response.
    """

    rollout: Rollout
    mask: torch.Tensor  # (B, R) float, 1 on response tokens
    raw_scores: torch.Tensor  # (B,) the reward's scores
    scores: torch.Tensor  # (B,) after clipping and the missing-EOS treatment: what PPO optimises
    old_logp: torch.Tensor  # actor log-probs at generation time
    ref_logp: torch.Tensor
    old_values: torch.Tensor  # zeros without a critic
    kl: torch.Tensor  # per-token KL to the reference (ppo.kl_estimator)
    non_score: torch.Tensor  # -beta * KL_t (grpo: the KL is in the loss instead, not in the reward)
    advantages: torch.Tensor  # gae: whitened over the whole rollout; rloo, grpo: the episode's advantage per token
    returns: torch.Tensor  # the critic's targets (gae only)
    entropy: torch.Tensor  # scalar, mean over response tokens
    t_gen: float
    t_fwd: float
    seq_advantages: torch.Tensor | None = None  # (B,) rloo, grpo: one advantage per episode

    @property
    def finite(self) -> bool:
        return all(bool(torch.isfinite(x).all())
                   for x in (self.scores, self.old_logp, self.ref_logp, self.old_values, self.advantages))


def shaped_scores(cfg: PPOStageConfig, scores: torch.Tensor, has_eos: torch.Tensor) -> torch.Tensor:
    """The configured clipping and missing-EOS treatment (detail 4; rlhf.algos.scores.shape_scores) of scores
    (B,)."""
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


def _generate(cfg: PPOStageConfig, model, ids: list[list[int]], tok, device) -> Rollout:
    """Sample responses (detail 3): KV cache, left padding, the configured sampling settings, stop at EOS and
    truncate after it (detail 4); under ZeRO-3 the parameters are gathered once for the whole batch
    (``ppo.gather_for_generation``)."""
    g = cfg.generation
    with E.gathered_for_generation(model, cfg.ppo.gather_for_generation) as synced:
        return generate(E.unwrap(model), ids, tok, g.max_new_tokens, g.temperature, g.top_k, g.top_p, g.do_sample,
                        device, synced_gpus=synced, min_new_tokens=g.min_new_tokens,
                        keep_logits=cfg.ppo.logprobs_from_generation)


def _gather(roll: Rollout, pad: int) -> Rollout:
    """Every rank's rollout, concatenated in rank order (prompts stay left-padded)."""
    return Rollout(E.all_gather_rows(roll.prompt_ids, pad, pad_left=True),
                   E.all_gather_rows(roll.prompt_mask, 0, pad_left=True),
                   E.all_gather_rows(roll.response_ids, pad), E.all_gather_rows(roll.response_mask, 0),
                   E.all_gather_rows(roll.has_eos))


def collect_rollout(cfg: PPOStageConfig, models: Models, tok, ids: list[list[int]], rows: list[dict], beta: float,
                    it: int, device) -> Experience:
    """Generate and score this rank's prompts, then compute over the whole rollout what the update needs.

    Scoring: the whole conversation on the tokens the chat template gives for it (detail 1), or the reward
    function; then clipping and the missing-EOS treatment (detail 4). Log-probs of actor and reference from
    ``logits / temperature`` (detail 3) and the critic's values, on this rank's episodes; then every rank gathers
    the rollout (token ids, masks, scores, log-probs, values: small next to the models), so advantages are whitened
    over all of it and global minibatch k is the same set of episodes whatever the world size. Per-token rewards
    r_t = -beta * KL_t plus the score on the last token (detail 5), optional reward whitening, GAE and whitened
    advantages (details 6, 7); or a critic-free estimator's advantages (:func:`critic_free_advantages`).
    """
    p, temp = cfg.ppo, cfg.generation.temperature
    t0 = time.time()
    models.actor.eval()
    roll = _generate(cfg, models.actor, ids, tok, device)
    raw_scores = models.scores(roll, rows, tok, device)
    t_gen = time.time() - t0
    t0 = time.time()
    with torch.no_grad():
        mask = roll.response_mask.float()  # (L, R), L episodes on this rank
        only = p.response_logits_only
        logits = roll.logits if roll.logits is not None else response_logits(models.actor, roll, response_only=only)
        roll.logits = None
        old_logp = logprobs_from_logits(logits, roll.response_ids, temp)
        ent_tok = entropy_from_logits(logits, temp) * mask
        del logits
        ref_logp = logprobs_from_logits(models.reference_logits(roll, only), roll.response_ids, temp)
        old_values = token_values(models.critic, roll) * mask if models.critic is not None else torch.zeros_like(mask)
        roll = _gather(roll, tok.pad_token_id)
        raw_scores, old_logp, ref_logp, old_values, ent_tok = (
            E.all_gather_rows(x) for x in (raw_scores, old_logp, ref_logp, old_values, ent_tok))
        mask = roll.response_mask.float()  # (B, R)
        scores = shaped_scores(cfg, raw_scores, roll.has_eos)
        warn_if_missing_eos_pays(cfg, it, raw_scores, roll.has_eos, scores)
        kl = kl_per_token(old_logp, ref_logp, p.kl_estimator) * mask
        seq_adv = None
        if p.advantage_estimator == "gae":
            rewards, non_score = per_token_rewards(scores, kl, mask, beta)
            if p.whiten_rewards:
                rewards = whiten(rewards, mask, shift_mean=False)
            advantages, returns = gae(rewards, old_values, mask, p.gamma, p.lam)
            advantages = whiten(advantages, mask)
        else:
            seq_adv, non_score = critic_free_advantages(p.advantage_estimator, scores, kl, beta,
                                                        p.samples_per_prompt)
            advantages, returns = seq_adv[:, None] * mask, torch.zeros_like(mask)
    return Experience(roll, mask, raw_scores, scores, old_logp, ref_logp, old_values, kl, non_score, advantages,
                      returns, masked_mean(ent_tok, mask), t_gen, time.time() - t0, seq_adv)


def critic_free_advantages(estimator: str, scores: torch.Tensor, kl: torch.Tensor, beta: float,
                           k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Episode advantages (B,) and per-token non-score rewards (B, T) of rloo or grpo (rlhf.algos.critic_free),
    episodes in groups of k consecutive rows; ``kl`` (B, T) is zero past each response. rloo: the sequence reward
    score - beta * sum_t KL_t against the mean of the group's other rewards; grpo: the group-normalised score (its
    KL term is in the loss, so none in the reward)."""
    if estimator == "rloo":
        non_score = -beta * kl
        return rloo_advantages(scores + non_score.sum(1), k), non_score
    return grpo_advantages(scores, k), torch.zeros_like(kl)


class NonFiniteCount:
    """Consecutive skipped updates (a non-finite rollout or micro-batch loss); ``ppo.max_nonfinite`` in a row stop
    the run with its last checkpoint intact. Checkpointed, so a resumed run counts on."""

    def __init__(self, limit: int, count: int = 0):
        self.limit, self.count = limit, count

    def skip(self, it: int, what: str) -> None:
        self.count += 1
        E.warn0(f"iteration {it + 1}: {what} skipped ({self.count} in a row)")

    def reached(self) -> bool:
        return self.count >= self.limit


def _ptx_term(cfg: PPOStageConfig, actor, x: torch.Tensor, stats: dict) -> torch.Tensor:
    """ptx_coef * (LM loss on pretraining blocks ``x``), with ``ppo.ptx_linearity_coef`` plus lambda * sum_i
    (1 - cos(h_i, h_{i-1})), the cosine regulariser of Razzhigaev et al. 2024 on the same forward pass."""
    p = cfg.ppo
    if p.ptx_linearity_coef > 0:
        with residual_stream(E.unwrap(actor)) as hidden:  # h_0 .. h_L of this forward pass, (n, T, d) each
            lm = ptx_loss(actor(input_ids=x, use_cache=False).logits, x)
        reg, _ = cosine_regularizer(hidden)
        stats.setdefault("ptx_linearity_reg", []).append(reg.item())
        term = p.ptx_coef * (lm + p.ptx_linearity_coef * reg)
    else:
        lm = ptx_loss(actor(input_ids=x, use_cache=False).logits, x)
        term = p.ptx_coef * lm
    stats.setdefault("ptx_loss", []).append(lm.item())
    return term


def _micro_step(cfg: PPOStageConfig, models: Models, exp: Experience, mb: list[int], x_ptx: torch.Tensor | None,
                stats: dict, skips: NonFiniteCount, it: int) -> bool:
    """One micro-batch (episodes ``mb``): one backward of the policy loss + ptx term for the actor and vf_coef *
    value_loss for the critic (detail 13: the models share no parameters, so this is one backward of their sum),
    then each engine's step (an optimizer step at the accumulation boundary). The policy loss is PPO's clipped
    surrogate (gae, rloo) or GRPO's, with its KL term (grpo); without a critic there is no value loss. A non-finite
    loss on any rank skips the micro-batch on all of them with a zero-gradient backward of a finite forward, keeping
    DeepSpeed's accumulation in step. Returns whether it was skipped."""
    p, actor, critic = cfg.ppo, models.actor, models.critic
    sub, mmask = exp.rollout.select(mb), exp.mask[mb]
    logp = logprobs_from_logits(response_logits(actor, sub, response_only=p.response_logits_only), sub.response_ids,
                                cfg.generation.temperature)
    if p.advantage_estimator == "grpo":
        pg, pg_stats = grpo_loss(logp, exp.old_logp[mb], exp.ref_logp[mb], exp.seq_advantages[mb], mmask,
                                 p.clip_range, p.kl_coef)
    else:
        pg, pg_stats = policy_loss(logp, exp.old_logp[mb], exp.advantages[mb], mmask, p.clip_range)
    actor_loss = pg + (_ptx_term(cfg, actor, x_ptx, stats) if x_ptx is not None else 0)
    losses = {"policy_loss": (pg, pg_stats)}
    if critic is not None:
        vf, vf_stats = value_loss(token_values(critic, sub), exp.old_values[mb], exp.returns[mb], mmask,
                                  p.clip_range_value)
        losses["value_loss"] = (vf, vf_stats)
    critic_loss = p.vf_coef * losses["value_loss"][0] if critic is not None else None
    finite = bool(torch.isfinite(actor_loss)) and (critic_loss is None or bool(torch.isfinite(critic_loss)))
    skipped = not E.all_ranks_true(finite)
    if skipped:
        skips.skip(it, "non-finite loss; micro-batch")
        one = sub.input_ids[:1, -1:]
        actor_loss = actor(input_ids=one).logits.sum() * 0.0
        if critic is not None:
            critic_loss = critic(input_ids=one).logits.sum() * 0.0
    else:
        for name, (loss, loss_stats) in losses.items():
            for key, v in loss_stats.items():
                stats.setdefault(key, []).append(v.item())
            stats.setdefault(name, []).append(loss.item())
    actor.backward(actor_loss)
    actor.step()
    if critic is not None:
        critic.backward(critic_loss)
        critic.step()
    return skipped


def ppo_update(cfg: PPOStageConfig, models: Models, exp: Experience, sizes: Sizes, ptx: PtxSampler | None, it: int,
               skips: NonFiniteCount) -> tuple[dict[str, list[float]], int]:
    """``ppo_epochs`` passes over minibatches drawn by a permutation seeded by (seed, iteration, epoch) over global
    episode indices (rank r trains on its r-th slice of each; with greedy generation a 2-process run reproduces a
    1-process one); one optimizer step per model per minibatch. A non-finite rollout skips the whole update (the
    same decision on every rank: they hold the same gathered rollout).

    Returns the loss statistics (lists over micro-batches) and the number of skipped updates."""
    stats: dict[str, list[float]] = {}
    if not exp.finite:
        skips.skip(it, "non-finite scores, log-probs or values; update")
        return stats, 1
    skipped, rank, micro = 0, E.rank(), sizes.plan.micro_batch
    for engine in models.engines.values():
        engine.train()
    for epoch in range(cfg.ppo.ppo_epochs):
        shares = minibatch_indices(cfg.run.seed, it, epoch, sizes.rollout, sizes.mini, sizes.world, rank)
        for k, share in enumerate(shares):
            step = it * sizes.steps_per_iter + epoch * sizes.minis_per_epoch + k  # global optimizer step
            for a, m0 in enumerate(range(0, sizes.local_mini, micro)):
                x_ptx = ptx.batch(step, rank, a).to(E.device()) if ptx is not None else None
                skipped += _micro_step(cfg, models, exp, share[m0 : m0 + micro], x_ptx, stats, skips, it)
                if skips.reached():
                    raise TrainingError(
                        f"ppo: {skips.count} non-finite losses/scores in a row (ppo.max_nonfinite) at iteration "
                        f"{it + 1}; stopping. Lower the learning rate or check the reward; the last checkpoint is intact."
                    )
    if not skipped:
        skips.count = 0
    return stats, skipped


def iteration_metrics(exp: Experience, stats: dict[str, list[float]], kl_sum: float) -> dict[str, float]:
    """This iteration's metrics, averaged over ranks (rollout statistics are global already)."""
    raw = exp.raw_scores
    return E.all_reduce_mean({
        "score_mean": raw.mean().item(),
        "score_std": raw.std().item() if len(raw) > 1 else 0.0,
        "reward_mean": exp.scores.mean().item(),
        "kl": kl_sum,
        "nonscore_reward": exp.non_score.sum(1).mean().item(),
        "entropy": exp.entropy.item(),
        "response_length": exp.mask.sum(1).mean().item(),
        "eos_rate": exp.rollout.has_eos.float().mean().item(),
        **{k: sum(v) / len(v) for k, v in stats.items()},
    })


def gold_mean(gold, rows: list[dict], texts: list[str], has_eos: torch.Tensor) -> float:
    """Mean score of the rule-based "gold" judge (``ppo.gold_rubric``) over the rollout, logged beside the proxy
    reward so that over-optimisation of the reward model shows."""
    scores = [gold.score(r["prompt"], t, r.get("category"), bool(e)) for r, t, e in zip(rows, texts, has_eos.tolist())]
    return sum(scores) / len(scores)


# ----------------------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------------------


def resume(cfg: PPOStageConfig, ckpt_root: str, engines: dict, kl_ctl, ema: EMA | None,
           skips: NonFiniteCount) -> tuple[str | None, int, float | None]:
    """Load the checkpoint ``run.resume`` names, if any, into the engines, the KL controller, the EMA and the
    non-finite count. Returns (the checkpoint or None, the first iteration to run, the held-out ptx loss measured
    before the first iteration, or None)."""
    resume_from = E.find_resume_checkpoint(cfg.run.resume, ckpt_root)
    if not resume_from:
        return None, 0, None
    state = E.load_checkpoint(resume_from, engines)
    skips.count = state["nonfinite"]
    kl_ctl.load_state_dict(state["kl"])
    if ema is not None:
        ema.shadow = E.load_checkpoint_tensors(resume_from, "ema") if E.is_main() else None
    return resume_from, state["step"], state.get("ptx_heldout_loss_start")


@stage_output("ppo")
def run(cfg: PPOStageConfig) -> dict:
    t_start = time.time()
    E.init_distributed()
    E.adopt_accelerate_launch(cfg.deepspeed)
    E.seed_everything(cfg.run.seed)
    out, p = cfg.run.output_dir, cfg.ppo
    ckpt_root = checkpoints_dir(out)
    device = E.device()

    tok = load_tokenizer(cfg.model)
    sizes = batch_sizes(cfg, E.world_size())
    data = load_data(cfg, tok, sizes)
    models = load_models(cfg, tok, sizes, device)
    kl_ctl = AdaptiveKLController(p.kl_coef, p.kl_target, p.kl_horizon) if p.adaptive_kl else FixedKLController(p.kl_coef)
    ema = EMA(p.ema_decay, E.gathered_state_dict(models.actor)) if p.ema_decay > 0 else None
    derived = describe(cfg, sizes, data, models)

    engines = models.engines
    skips = NonFiniteCount(p.max_nonfinite)
    resume_from, start_it, ptx_start = resume(cfg, ckpt_root, engines, kl_ctl, ema, skips)
    announce("ppo", out, resume_from)
    save_config(out, cfg, derived)
    log = MetricsLog(out, cfg.run.report_to, resume_step=start_it, run_name=os.path.basename(out),
                     config=dataclasses.asdict(cfg))
    gold = None
    if p.gold_rubric:  # rule-based "gold" judge logged beside the proxy reward (over-optimisation shows)
        from rlhf.eval.rubric import RubricJudge

        gold = RubricJudge(p.gold_rubric)

    if data.ptx_eval is not None and start_it == 0:
        ptx_start = lm_loss(models.actor, data.ptx_eval, sizes.plan.micro_batch, device)
    bar = tqdm(total=p.iterations, initial=start_it, desc="ppo", disable=not (E.is_main() and cfg.run.progress))
    for it in range(start_it, p.iterations):
        t_it = time.time()
        # each prompt answered ppo.samples_per_prompt times in a row; rank r takes the r-th slice of episodes
        idx = grouped(iteration_indices(it, len(data.ids), sizes.prompts, cfg.run.seed), sizes.samples)
        mine = idx[E.rank() * sizes.local_rollout : (E.rank() + 1) * sizes.local_rollout]
        exp = collect_rollout(cfg, models, tok, [data.ids[i] for i in mine], [data.rows[i] for i in mine],
                              kl_ctl.value, it, device)
        t0 = time.time()
        stats, skipped = ppo_update(cfg, models, exp, sizes, data.ptx, it, skips)
        if skips.reached():
            raise TrainingError(f"ppo: {skips.count} non-finite scores in a row (ppo.max_nonfinite) at iteration "
                                f"{it + 1}; stopping. Check the reward; the last checkpoint is intact.")
        t_train = time.time() - t0

        # the KL controller (detail 10), the EMA (detail 14), metrics, samples, checkpoint
        kl_sum = masked_mean(exp.kl.sum(1), torch.ones_like(exp.scores)).item()  # mean over episodes of summed KL
        beta = kl_ctl.value
        kl_ctl.update(kl_sum, sizes.rollout)
        if ema is not None:
            ema.update(E.gathered_state_dict(models.actor))
        m = iteration_metrics(exp, stats, kl_sum)
        resp_tokens, it_time = float(exp.mask.sum().item()), time.time() - t_it
        m.update(
            beta=beta, lr=models.actor.get_lr()[0], skipped_updates=skipped,
            time_generation=exp.t_gen, time_forward=exp.t_fwd, time_train=t_train, time_iteration=it_time,
            tokens_per_s=resp_tokens / max(it_time, 1e-9), generation_tokens_per_s=resp_tokens / max(exp.t_gen, 1e-9),
        )
        texts = tok.batch_decode(exp.rollout.response_ids, skip_special_tokens=True)
        rows_it = [data.rows[i] for i in idx]
        if gold is not None:
            m["gold_rubric_mean"] = gold_mean(gold, rows_it, texts, exp.rollout.has_eos)
        done = it + 1
        log.log(done, m)
        bar.set_postfix(score=f"{m['score_mean']:.2f}", kl=f"{m['kl']:.2f}",
                        **({"gold": f"{m['gold_rubric_mean']:.2f}"} if gold is not None else {}))
        bar.update(1)
        E.report_progress(done, p.iterations, "iteration")
        if done % p.sample_every == 0 or done == p.iterations:
            write_samples(os.path.join(out, "samples.jsonl"), done, rows_it, texts, exp.scores.tolist())
        if done % cfg.run.save_steps == 0 or done == p.iterations:
            E.save_checkpoint(
                ckpt_root, done, engines,
                {"stage": "ppo", "nonfinite": skips.count, "kl": kl_ctl.state_dict(), "ptx_heldout_loss_start": ptx_start},
                cfg.run.save_total_limit,
                tensors={"ema": ema.shadow} if ema is not None and E.is_main() else None,
            )
    bar.close()
    summary = finish(cfg, models, data, tok, ema, ptx_start, sizes, device)
    summary["wall_time_s"] = round(time.time() - t_start, 1)
    if E.is_main():
        write_json(os.path.join(out, "summary.json"), summary)
    log.close()
    E.print0(f"[ppo] done: {json.dumps(summary)}")
    return summary


def finish(cfg: PPOStageConfig, models: Models, data: PromptData, tok, ema: EMA | None, ptx_start: float | None,
           sizes: Sizes, device) -> dict:
    """Evaluate (held-out pretraining loss at start and end, held-out reward of the final and the starting actor)
    and save the actor (OUT/), the critic if any (OUT/critic/) and the EMA (OUT/ema/); returns the summary."""
    p, out = cfg.ppo, cfg.run.output_dir
    summary: dict = {"stage": "ppo", "iterations": p.iterations, "ptx_coef": p.ptx_coef, "kl_coef": p.kl_coef,
                     "advantage_estimator": p.advantage_estimator}
    if data.ptx_eval is not None:
        summary["ptx_heldout_loss_end"] = lm_loss(models.actor, data.ptx_eval, sizes.plan.micro_batch, device)
        if ptx_start is not None:
            summary["ptx_heldout_loss_start"] = ptx_start
    if data.heldout is not None and models.reward_model is not None:
        summary.update(heldout_rewards(data.heldout, models.actor, models.reference, models.reward_model, models.norm,
                                       tok, cfg, device))
    save_policy(models.actor, tok, out, cfg)
    if models.critic is not None:
        E.save_hf_model(models.critic, tok, os.path.join(out, "critic"), extra_files=critic_files(models.value_offset))
    if ema is not None:
        save_ema(ema, models.actor, tok, os.path.join(out, "ema"))
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
