"""Config system: strict loading, errors that name key + file + line, overrides, every shipped YAML validates."""

from __future__ import annotations

import glob
import os

import pytest
import yaml

from rlhf.config import (
    STAGES,
    ConfigError,
    DeepSpeedConfig,
    PipelineConfig,
    PretrainStageConfig,
    SFTStageConfig,
    describe,
    dump_yaml,
    field_docs,
    load_config,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, text: str) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return str(p)


def test_unknown_key_names_key_file_line_and_suggestion(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: x\ntrain:\n  epochs: 2\n  learing_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(SFTStageConfig, path)
    msg = str(e.value)
    assert f"{path}:5" in msg
    assert "'train.learing_rate'" in msg
    assert "did you mean 'train.learning_rate'" in msg


def test_unknown_section(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: x\ndeepspeeed:\n  zero_stage: 2\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:3: unknown key 'deepspeeed' \(did you mean 'deepspeed'\?\)"):
        load_config(SFTStageConfig, path)


def test_wrong_type_names_key_and_line(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: x\ntrain:\n  epochs: three\n")
    with pytest.raises(ConfigError) as e:
        load_config(SFTStageConfig, path)
    assert f"{path}:4" in str(e.value) and "'train.epochs' expects float" in str(e.value)


def test_bool_is_not_an_int(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: x\nrun:\n  seed: true\n")
    with pytest.raises(ConfigError, match="'run.seed' expects int"):
        load_config(SFTStageConfig, path)


def test_literal_choice_suggests_closest(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: x\ndeepspeed:\n  precision: bf61\n")
    with pytest.raises(ConfigError, match=r"did you mean 'bf16'"):
        load_config(SFTStageConfig, path)


def test_impossible_combination_names_key(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: x\ndeepspeed:\n  zero_stage: 2\n  offload_param: true\n")
    with pytest.raises(ConfigError) as e:
        load_config(SFTStageConfig, path)
    assert "'deepspeed.offload_param'" in str(e.value) and "zero_stage 3" in str(e.value)
    assert f"{path}:5" in str(e.value)


def test_errors_carry_their_key(tmp_path):
    """ConfigError.key is the dotted key as data, set where the error is raised (None when no key is at fault)."""

    def key_of(text: str, overrides=()) -> str | None:
        with pytest.raises(ConfigError) as e:
            load_config(SFTStageConfig, write(tmp_path, text), overrides)
        return e.value.key

    named = "model:\n  name_or_path: x\n"
    assert key_of(named + "train:\n  learing_rate: 0.1\n") == "train.learing_rate"  # unknown
    assert key_of(named + "train:\n  epochs: three\n") == "train.epochs"  # wrong type
    assert key_of(named + "deepspeed:\n  zero_stage: 2\n  offload_param: true\n") == "deepspeed.offload_param"
    assert key_of(named, ["deepspeed.micro_batch_size=0"]) == "deepspeed.micro_batch_size"  # require_positive
    assert key_of("run:\n  seed: 1\n") == "model"  # a check about the section as a whole
    assert key_of(named + "train:\n  epochs: 1\n  epochs: 2\n") == "train.epochs"  # duplicate
    assert key_of(named + " train: [\n") is None  # invalid YAML
    with pytest.raises(ConfigError) as e:
        load_config(PipelineConfig, write(tmp_path, "stages:\n  - {name: a-b, config: x.yaml}\n"))
    assert e.value.key == "stages[0].name"


def test_negative_head_init_std_names_head_init_std():
    """reward.center_rewards_coefficient and reward.head_init_std used to share one check and one message, so a
    negative head_init_std blamed center_rewards_coefficient (and pointed at its line)."""
    from rlhf.config import RMStageConfig

    with pytest.raises(ConfigError, match=r"command-line override 'reward.head_init_std': key 'reward.head_init_std': "
                                          r"must be >= 0$") as e:
        load_config(RMStageConfig, None, ["model.name_or_path=x", "reward.head_init_std=-0.1"])
    assert e.value.key == "reward.head_init_std"
    with pytest.raises(ConfigError, match=r"key 'reward.center_rewards_coefficient': must be >= 0$"):
        load_config(RMStageConfig, None, ["model.name_or_path=x", "reward.center_rewards_coefficient=-1"])


def test_every_field_error_names_a_field_of_its_section():
    """A check()'s FieldError is turned into the key section.field unchecked, so its field must exist."""
    import ast
    import dataclasses
    import inspect
    import textwrap

    import rlhf.config as C

    classes = [c for c in vars(C).values() if dataclasses.is_dataclass(c)]
    seen = 0
    for cls in classes:
        if "check" not in vars(cls):
            continue
        fields = {f.name for f in dataclasses.fields(cls)}
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(cls.check)))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("FieldError", "require_positive"):
                names = node.args[:1] if node.func.id == "FieldError" else node.args[1:]
                for arg in names:
                    assert isinstance(arg, ast.Constant) and arg.value in fields, (cls.__name__, ast.unparse(arg))
                    seen += 1
    assert seen > 40


def test_model_needs_exactly_one_source(tmp_path):
    path = write(tmp_path, "run:\n  seed: 1\n")
    with pytest.raises(ConfigError, match="name_or_path and from_config"):
        load_config(SFTStageConfig, path)


def test_yaml_1_1_float_strings_and_ints_coerce(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: x\ntrain:\n  learning_rate: 1e-5\n  epochs: 2\n")
    cfg = load_config(SFTStageConfig, path)
    assert cfg.train.learning_rate == pytest.approx(1e-5) and isinstance(cfg.train.epochs, float)


def test_overrides_apply_and_errors_name_override(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: x\n")
    cfg = load_config(SFTStageConfig, path, ["train.learning_rate=0.5", "lora.target_modules=[q_proj]", "lora.enabled=true"])
    assert cfg.train.learning_rate == 0.5 and cfg.lora.target_modules == ["q_proj"] and cfg.lora.enabled
    with pytest.raises(ConfigError, match="command-line override 'train.epochs'"):
        load_config(SFTStageConfig, path, ["train.epochs=abc"])
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'"):
        load_config(SFTStageConfig, path, ["train.epoch=1"])


def test_invalid_yaml_names_line(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: x\n train: [\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:\d+: invalid YAML"):
        load_config(SFTStageConfig, path)


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(SFTStageConfig, "does/not/exist.yaml")


def test_every_field_has_a_doc():
    from rlhf.config import PipelineConfig, PipelineStage

    for cls in [*STAGES.values(), PipelineConfig, PipelineStage]:
        for key, _tp, _default, doc in describe(cls):
            assert doc, f"{cls.__name__}: field {key} has no one-line doc"
    assert "ZeRO stage" in field_docs(DeepSpeedConfig)["zero_stage"]


def test_resolved_config_round_trips(tmp_path):
    """A stage's saved OUT/config.yaml, derived section and all, loads back as the same config."""
    cfg = load_config(PretrainStageConfig, os.path.join(ROOT, "configs/tiny/pretrain.yaml"))
    text = dump_yaml(cfg, {"derived": {"global_batch": 32}})
    assert yaml.safe_load(text)["derived"] == {"global_batch": 32}
    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    assert load_config(PretrainStageConfig, str(path)) == cfg
    assert load_config(PretrainStageConfig, str(path), ["train.epochs=3"]).train.epochs == 3
    # only `derived` is skipped: any other unknown top-level key still fails, naming its line
    path.write_text(text + "derivd: {}\n")
    with pytest.raises(ConfigError, match=r"resolved.yaml:\d+: unknown key 'derivd'"):
        load_config(PretrainStageConfig, str(path))


def stage_of(path: str) -> str | None:
    """configs/<group>/<stage>[_variant].yaml; deepspeed overlays are checked as sections."""
    name = os.path.basename(path).split(".")[0].split("_")[0]
    return name if name in STAGES else None


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)))
def test_every_shipped_yaml_loads_and_validates(path):
    with open(path) as f:
        first = f.readline()
    assert first.startswith("#"), f"{path} must open with a comment saying what it is for"
    if os.sep + "deepspeed" + os.sep in path:
        from rlhf.config import load_section  # overlays hold one section

        with open(path) as f:
            data = yaml.safe_load(f)
        load_section(DeepSpeedConfig, data["deepspeed"], "deepspeed", path)
        return
    if os.sep + "accelerate" + os.sep in path:  # accelerate launch files (launch/accelerate.sh), not rlhf configs
        with open(path) as f:
            data = yaml.safe_load(f)
        stage = int(os.path.basename(path)[len("zero"):].split(".")[0])
        assert data["distributed_type"] == "DEEPSPEED" and data["deepspeed_config"]["zero_stage"] == stage
        return
    if os.path.basename(path).startswith("pipeline"):
        from rlhf.config import PipelineConfig
        from rlhf.stages.pipeline import stage_config

        cfg = load_config(PipelineConfig, path)
        for i in range(len(cfg.stages)):  # every stage's own config, with the pipeline's overrides applied
            stage_config(cfg, i)
        return
    stage = stage_of(path)
    if stage is None:
        pytest.fail(f"{path}: cannot tell which stage it configures (name it <stage>[_variant].yaml)")
    load_config(STAGES[stage], path)


def test_greedy_generation_rejects_sampling_filters(tmp_path):
    from rlhf.config import PPOStageConfig

    path = write(tmp_path, "model:\n  name_or_path: x\nreward:\n  function: a:b\ngeneration:\n  do_sample: false\n  top_k: 5\n")
    with pytest.raises(ConfigError, match="'generation.do_sample': greedy decoding"):
        load_config(PPOStageConfig, path)
    path = write(tmp_path, "model:\n  name_or_path: x\nreward:\n  function: a:b\nppo:\n  gather_for_generation: 1\n")
    with pytest.raises(ConfigError, match="'ppo.gather_for_generation' expects bool"):
        load_config(PPOStageConfig, path)


def test_missing_or_unfinished_model_paths_fail_before_loading_naming_the_key(tmp_path, capsys):
    """`rlhf <stage>` checks every model path it will load: a typo or an unfinished stage names its key, and
    nothing is written to the output directory."""
    from rlhf.cli import main as cli_main
    from rlhf.config import EvalStageConfig, PPOStageConfig
    from rlhf.preflight import check_model_sources

    sft = os.path.join(ROOT, "configs/tiny/sft.yaml")
    out = tmp_path / "out"
    assert cli_main(["sft", sft, f"model.name_or_path={tmp_path}/no_such_run/sft", f"run.output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert f"model.name_or_path: {tmp_path}/no_such_run/sft: no such directory" in err, err
    assert not out.exists()

    unfinished = tmp_path / "rm"  # a stage's output directory before the stage has finished
    (unfinished / "checkpoints").mkdir(parents=True)
    model_dir = tmp_path / "sft"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    ppo = load_config(PPOStageConfig, os.path.join(ROOT, "configs/tiny/ppo.yaml"),
                      [f"model.name_or_path={model_dir}", f"reward.model={unfinished}"])
    with pytest.raises(ConfigError, match=r"^reward\.model: .*/rm is a directory without config\.json.*not finished"):
        check_model_sources(ppo)
    # hub ids pass through to the hub (nothing is downloaded here); a file is not a model directory
    check_model_sources(load_config(PPOStageConfig, os.path.join(ROOT, "configs/tiny/ppo.yaml"),
                                    ["model.name_or_path=HuggingFaceTB/SmolLM2-135M", f"reward.model={model_dir}"]))
    with pytest.raises(ConfigError, match=r"^model\.name_or_path: .*config\.json is a file"):
        check_model_sources(load_config(PPOStageConfig, os.path.join(ROOT, "configs/tiny/ppo.yaml"),
                                        [f"model.name_or_path={model_dir}/config.json", f"reward.model={model_dir}"]))

    # eval: every candidate is checked; a judge's model only when that judge runs
    ev = [f"models={{sft: {model_dir}, ppo: {tmp_path}/ppo}}", f"reward_judge.model={tmp_path}/gone"]
    with pytest.raises(ConfigError, match=r"^models\.ppo: .*/ppo: no such directory"):
        check_model_sources(load_config(EvalStageConfig, os.path.join(ROOT, "configs/tiny/eval.yaml"), ev))
    ev[0] = f"models={{sft: {model_dir}, ppo: {model_dir}}}"
    with pytest.raises(ConfigError, match=r"^reward_judge\.model: .*/gone: no such directory"):
        check_model_sources(load_config(EvalStageConfig, os.path.join(ROOT, "configs/tiny/eval.yaml"), ev))
    check_model_sources(load_config(EvalStageConfig, os.path.join(ROOT, "configs/tiny/eval.yaml"),
                                    ev + ["eval.judges=[rubric]"]))
