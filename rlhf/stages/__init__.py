"""Stages: one readable file each, setup -> train -> save; each is ``rlhf.stages.<command>.run(cfg)``.

:func:`run_stage` is the one way in, for the CLI (``rlhf sft CONFIG``) and the pipeline alike.
"""

from __future__ import annotations

import importlib
import os
from typing import Any


def run_stage(command: str, cfg: Any, **options: Any) -> dict:
    """Run stage ``command`` with its loaded config ``cfg``: check its model sources and input files first (in a
    pipeline an earlier stage's output exists only now), then ``run(cfg, **options)`` of ``rlhf.stages.<command>``.

    A start that fails before writing anything leaves the output directory as it was (no empty skeleton).
    """
    from rlhf.failures import remove_if_untouched
    from rlhf.preflight import check_inputs, check_model_sources

    check_model_sources(cfg)
    check_inputs(cfg)
    out = cfg.run.output_dir
    existed, had_checkpoints = os.path.exists(out), os.path.exists(os.path.join(out, "checkpoints"))
    module = importlib.import_module(f"rlhf.stages.{command}")
    try:
        return module.run(cfg, **options)
    except BaseException:
        remove_if_untouched(out, existed, had_checkpoints)
        raise
