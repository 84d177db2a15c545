"""The shared DeepSpeed dict, handed to TRL/HF Trainer-based stages (SFT, RM).

Facts this encodes (checked on transformers 5 / accelerate 1.x / TRL 1.x):
- TRL configs default to bf16, which fails on a CPU-only machine: precision comes from our config.
- Under ``torchrun`` on CPU, accelerate counts one process in its metric gather unless ``use_cpu=True`` is
  passed with the DeepSpeed dict; with it ZeRO-3 over 2 CPU processes trains.
- ``accelerate launch`` with a DeepSpeed accelerate config exports its own DeepSpeed settings, which accelerate
  refuses to combine with an explicit dict: :func:`rlhf.engine.adopt_accelerate_launch` checks they agree with
  the ``deepspeed:`` section and removes them.
- HF writes ``checkpoint-N`` directories non-atomically; :class:`CheckpointMarker` drops a ``COMPLETE`` file into
  each once the save has returned, and :func:`find_hf_checkpoint` only resumes from marked ones.
- DeepSpeed reads the checkpoint's .pt files with a full unpickle: :func:`train_resuming` makes it weights only.
- A resumed ``Trainer.train`` is not the rest of the uninterrupted run: its ``training_loss`` averages only the steps
  of that call (0.0 when none are left), and from the run's last checkpoint it trains one step past ``max_steps``.
  :func:`exact_resume` fixes both: the marker also records the loss totals (``Trainer._total_loss_scalar``,
  ``_tr_loss`` per rank, ``_globalstep_last_logged``) in each checkpoint and puts them back when training resumes,
  and an epoch is not entered once ``max_steps`` is reached; :func:`train_loss` is the whole run's mean.
- Under DeepSpeed the optimizer step happens inside ``training_step`` (accelerate's backward), and the Trainer
  calls ``on_step_end`` before it logs or saves that step: :func:`install_nonfinite_guard` checks the step there
  (``rlhf.engine.guard``), with the losses seen by :class:`NonFiniteLossMixin`.
"""

from __future__ import annotations

import json
import os

import torch
from transformers import TrainerCallback

from rlhf.config import DeepSpeedConfig, RunConfig, TrainConfig
from rlhf.engine.core import BatchPlan, adopt_accelerate_launch, deepspeed_config
from rlhf.engine.dist import init_env, is_main, on_cpu, rank, report_progress, skip_shm_op_when_alone, warn0, world_size
from rlhf.engine.guard import NonFiniteGuard

COMPLETE = "COMPLETE"
LOSS_STATE = "rlhf_loss_state.json"


def trainer_kwargs(run: RunConfig, train: TrainConfig, ds: DeepSpeedConfig, plan: BatchPlan, ckpt_dir: str,
                   model=None) -> dict:
    """Keyword arguments shared by TRL's SFTConfig / RewardConfig, from our sections (``model`` sizes ZeRO's
    communication buckets)."""
    init_env()
    skip_shm_op_when_alone()
    adopt_accelerate_launch(ds)
    kw = dict(
        output_dir=ckpt_dir,
        per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.grad_accum,
        learning_rate=train.learning_rate * plan.lr_scale,
        lr_scheduler_type={"cosine": "cosine_with_min_lr", "linear": "linear", "constant": "constant_with_warmup"}[
            train.lr_scheduler
        ],
        warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay,
        adam_beta1=train.adam_beta1,
        adam_beta2=train.adam_beta2,
        adam_epsilon=train.adam_eps,
        max_grad_norm=ds.gradient_clipping if ds.gradient_clipping > 0 else 0.0,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps if train.max_steps > 0 else -1,
        logging_steps=run.logging_steps,
        save_strategy="steps",
        save_steps=run.save_steps,
        save_total_limit=run.save_total_limit,
        eval_strategy="steps" if train.eval_steps else "no",
        eval_steps=train.eval_steps or None,
        seed=run.seed,
        data_seed=run.seed,
        report_to=list(run.report_to) or "none",
        disable_tqdm=not (run.progress and is_main()),
        bf16=ds.precision == "bf16",
        fp16=ds.precision == "fp16",
        use_cpu=on_cpu(),
        deepspeed=deepspeed_config(ds, plan, train, model),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        save_only_model=False,
        logging_first_step=True,
        gradient_checkpointing=train.gradient_checkpointing,
    )
    if train.lr_scheduler == "cosine":
        kw["lr_scheduler_kwargs"] = {"min_lr_rate": train.min_lr_ratio}
    return kw


class CheckpointMarker(TrainerCallback):
    """Marks a checkpoint-N directory complete once HF's save has returned (see module doc); with a trainer attached
    by :func:`exact_resume`, first records the training-loss totals in it and restores them on resume."""

    trainer = None
    resume_from: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        t = self.trainer
        if t is None or not self.resume_from:
            return
        path = os.path.join(self.resume_from, LOSS_STATE)
        if not os.path.exists(path):
            warn0(f"{self.resume_from} has no {LOSS_STATE} (written by an older rlhf or another program): "
                  "train_loss in summary.json averages only the steps trained after it")
            return
        with open(path) as f:
            saved = json.load(f)
        tr = saved["tr_loss"]
        t._total_loss_scalar = saved["total_loss"]
        t._tr_loss = torch.tensor(tr[rank()] if len(tr) == world_size() else tr[0], device=t._tr_loss.device)
        t._globalstep_last_logged = saved["last_logged"]

    def on_save(self, args, state, control, **kwargs):
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        t = self.trainer
        if t is not None:  # every rank's running loss sum (a collective), then rank 0 writes them
            tr = [t._tr_loss.item()]
            if world_size() > 1 and torch.distributed.is_initialized():
                tr = [None] * world_size()
                torch.distributed.all_gather_object(tr, t._tr_loss.item())
            if is_main() and os.path.isdir(path):
                with open(os.path.join(path, LOSS_STATE), "w") as f:
                    json.dump({"total_loss": t._total_loss_scalar, "tr_loss": tr,
                               "last_logged": t._globalstep_last_logged}, f)
        if is_main():
            if os.path.isdir(path):
                with open(os.path.join(path, COMPLETE), "w") as f:
                    f.write(str(state.global_step))


class MetricsCallback(TrainerCallback):
    """Forwards the Trainer's logs to our ``metrics.jsonl`` (one line per logged step)."""

    def __init__(self, log, prefix_eval: bool = True):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.log.log(state.global_step, {k: v for k, v in logs.items() if isinstance(v, (int, float))})


class ProgressCallback(TrainerCallback):
    """Reports each optimizer step to ``rlhf.engine.report_progress`` (the pipeline's overall progress view)."""

    def on_step_end(self, args, state, control, **kwargs):
        report_progress(state.global_step, state.max_steps)


def exact_resume(trainer, resume_from: str | None) -> None:
    """Make ``trainer.train(resume_from_checkpoint=resume_from)`` continue exactly as the uninterrupted run would
    (see module doc); ``trainer`` has a :class:`CheckpointMarker` among its callbacks."""
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, CheckpointMarker):
            cb.trainer, cb.resume_from = trainer, resume_from
    run_epoch = trainer._run_epoch

    def _run_epoch(*args, **kwargs):
        if trainer.state.global_step >= trainer.state.max_steps:  # resumed from the run's last checkpoint
            return None
        return run_epoch(*args, **kwargs)

    trainer._run_epoch = _run_epoch


def train_loss(trainer) -> float:
    """Mean training loss per optimizer step over the whole run, resumed or not (with :func:`exact_resume`)."""
    return trainer._total_loss_scalar / max(trainer.state.global_step, 1)


def hf_checkpoint_step(path: str) -> int:
    """The optimizer step an HF checkpoint was written at (from its trainer_state.json, whatever its name)."""
    with open(os.path.join(path, "trainer_state.json")) as f:
        return int(json.load(f)["global_step"])
class NonFiniteLossMixin:
    """Mixed in before a Trainer class: every micro-batch loss goes to the guard of
    :func:`install_nonfinite_guard` (kept on the device; checked once per optimizer step)."""

    nonfinite_guard: NonFiniteGuard | None = None

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        if self.nonfinite_guard is not None:
            self.nonfinite_guard.observe_loss(loss)
        return loss


class NonFiniteCallback(TrainerCallback):
    """Runs the guard at ``on_step_end``, before the Trainer logs, evaluates or saves the step."""

    def __init__(self, trainer, guard: NonFiniteGuard):
        self.trainer, self.guard = trainer, guard

    def on_train_begin(self, args, state, control, **kwargs):
        from .core import record_grad_norm

        engine = self.trainer.model_wrapped  # prepared (the DeepSpeedEngine) before on_train_begin
        if hasattr(engine, "get_global_grad_norm"):
            record_grad_norm(engine)  # fp32 ZeRO-0 would log no grad_norm and leave the guard without it

    def on_step_end(self, args, state, control, model=None, **kwargs):
        engine = self.trainer.model_wrapped  # the DeepSpeedEngine once training has started
        grad_norm = engine.get_global_grad_norm() if hasattr(engine, "get_global_grad_norm") else None
        self.guard.check(state.global_step, model if model is not None else self.trainer.model, grad_norm)


def install_nonfinite_guard(trainer, stage: str) -> None:
    """Stop ``trainer`` (a :class:`NonFiniteLossMixin` Trainer) at the first non-finite loss, gradient or weight
    with a :class:`rlhf.errors.TrainingError` naming the step, before that step is saved."""
    guard = NonFiniteGuard(stage, lambda: find_hf_checkpoint("auto", trainer.args.output_dir), fp16=trainer.args.fp16)
    trainer.nonfinite_guard = guard
    trainer.add_callback(NonFiniteCallback(trainer, guard))


def find_hf_checkpoint(resume: str, ckpt_dir: str) -> str | None:
    """``run.resume`` -> the newest complete HF checkpoint-N dir, or None."""
    if resume == "never":
        return None
    if resume != "auto":
        if not os.path.exists(os.path.join(resume, "trainer_state.json")):
            raise FileNotFoundError(f"run.resume: {resume} is not a complete checkpoint (no trainer_state.json)")
        return resume
    if not os.path.isdir(ckpt_dir):
        return None
    found = []
    for name in os.listdir(ckpt_dir):
        path = os.path.join(ckpt_dir, name)
        if name.startswith("checkpoint-") and name[11:].isdigit() and os.path.exists(os.path.join(path, COMPLETE)):
            found.append((int(name[11:]), path))
    return max(found)[1] if found else None


def train_resuming(trainer, resume_from: str | None):
    """``trainer.train(resume_from_checkpoint=resume_from)``, every checkpoint file read as data: the Trainer resumes
    DeepSpeed's files through DeepSpeed's full unpickle, and restores its RNG state inside the training loop, so the
    whole call runs under :func:`rlhf.engine.safeload.safe_loading` (a refused file is a CheckpointError)."""
    from rlhf.engine.safeload import safe_loading

    with safe_loading(resume_from):
        return trainer.train(resume_from_checkpoint=resume_from)


def save_final_model(trainer, tok, out: str, lora_base=None) -> None:
    """The trained model into ``out`` as a plain HF model + tokenizer, atomically (files moved with os.replace).

    ``trainer.save_model`` gathers ZeRO-3 shards on rank 0. With LoRA, pass ``lora_base`` (a callable returning
    a fresh base model): the adapter goes to ``out/adapter`` and a merged full model to ``out``.
    """
    import shutil

    from rlhf.engine.dist import barrier

    tmp = os.path.join(out, ".tmp-model")
    if is_main():
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(tmp)
    barrier()
    if not is_main():
        return
    if lora_base is not None:
        from peft import PeftModel

        adapter_dir = os.path.join(out, "adapter")
        shutil.rmtree(adapter_dir, ignore_errors=True)
        os.replace(tmp, adapter_dir)
        merged = PeftModel.from_pretrained(lora_base(), adapter_dir).merge_and_unload()
        os.makedirs(tmp)
        merged.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if os.path.exists(os.path.join(tmp, "training_args.bin")):
        os.remove(os.path.join(tmp, "training_args.bin"))  # a Trainer pickle; outputs are safetensors + JSON only
    for name in os.listdir(tmp):
        dst = os.path.join(out, name)
        if os.path.isdir(dst) and not os.path.islink(dst):
            shutil.rmtree(dst)
        os.replace(os.path.join(tmp, name), dst)
    os.rmdir(tmp)
