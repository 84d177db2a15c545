"""Bad input gets one clear ``error:`` line (exit 2), never a traceback; real preference data can be used.

Every case runs through ``rlhf.cli.main`` (Ctrl-C through a real subprocess that gets a real SIGINT) and checks
the exit status, that stderr has exactly one line starting ``error:`` naming the file or key (a DataError's
listing of bad rows adds indented lines after it), that there is no traceback, and that a failure before
training leaves the output directory as it was (here: not created).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from rlhf.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT = os.path.join(ROOT, "configs/tiny/sft.yaml")
RM = os.path.join(ROOT, "configs/tiny/rm.yaml")
PRETRAIN = os.path.join(ROOT, "configs/tiny/pretrain.yaml")
PIPELINE = os.path.join(ROOT, "configs/tiny/pipeline.yaml")


def one_error(rc: int, err: str, *names: str, code: int = 2) -> str:
    """Assert the CLI's contract for a user error; returns the error line."""
    assert rc == code, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def sft_args(out, base, *extra: str) -> list[str]:
    return ["sft", SFT, f"run.output_dir={out}", f"model.name_or_path={base}", "run.progress=false",
            "train.max_steps=1", "train.gradient_checkpointing=false", *extra]


def rm_args(out, base, train_file, *extra: str) -> list[str]:
    return ["rm", RM, f"run.output_dir={out}", f"model.name_or_path={base}", "run.progress=false",
            "train.max_steps=1", "train.gradient_checkpointing=false", f"data.train_file={train_file}",
            "data.test_file=", "data.categories_file=", *extra]


def pretrain_args(out, model_json, *extra: str) -> list[str]:
    return ["pretrain", PRETRAIN, f"run.output_dir={out}", f"model.from_config={model_json}", "run.progress=false",
            "data.block_size=64", "deepspeed.global_batch_size=4", "deepspeed.micro_batch_size=4", *extra]


def full_device(tmp_path) -> str:
    """A device that fails every write with ENOSPC: /dev/full, or the same device node made here (as root)."""
    if os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode):
        return "/dev/full"
    path = str(tmp_path / "full")
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except OSError as e:
        pytest.skip(f"no /dev/full and no permission to make one ({e.strerror})")
    return path


# ----------------------------------------------------------------------------------------------------------
# 7. real preference data: data.on_invalid
# ----------------------------------------------------------------------------------------------------------

HH_GOOD = [("What is two plus two?", "It is four.", "Five."), ("Name a colour.", "Blue is a colour.", "No."),
           ("Is water wet?", "Water makes things wet.", "Maybe."), ("Say hello.", "Hello there!", "Go away.")]


@pytest.fixture
def hh_file(tmp_path) -> str:
    """HH transcripts: good pairs, one whose chosen and rejected differ before the last turn (line 4) and one
    whose rejected response is empty (line 7, as such rows appear in the public data: nothing after 'Assistant:')."""
    rows = [{"chosen": f"\n\nHuman: {q}\n\nAssistant: {c}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {r}"}
            for q, c, r in HH_GOOD * 3]
    rows.insert(3, {"chosen": "\n\nHuman: First question?\n\nAssistant: Yes.\n\nHuman: Why?\n\nAssistant: Because.",
                    "rejected": "\n\nHuman: Another one?\n\nAssistant: No.\n\nHuman: Why?\n\nAssistant: Dunno."})
    rows.insert(6, {"chosen": "\n\nHuman: Help me.\n\nAssistant: Sure, here is how.",
                    "rejected": "\n\nHuman: Help me.\n\nAssistant:"})
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_invalid_preference_rows_are_refused_by_default_with_their_lines(hh_file, micro_base, tmp_path, capsys):
    out = tmp_path / "rm"
    rc = cli_main(rm_args(out, micro_base, hh_file))
    err = capsys.readouterr().err
    line = one_error(rc, err, hh_file, "data.on_invalid=drop")
    assert line.startswith("error: 2 bad row(s)")
    assert f"  {hh_file}:4: prompts differ" in err
    assert f"  {hh_file}:7: empty rejected response" in err  # not "the last turn must be the assistant's"
    assert not out.exists()
    # `rlhf data check` reports the same lines and says how training can use the file
    assert cli_main(["data", "check", hh_file]) == 1
    report = capsys.readouterr().out
    assert f"{hh_file}:4: prompts differ" in report and f"{hh_file}:7: empty rejected response" in report
    assert "with data.on_invalid=drop it trains without them" in report


def test_on_invalid_drop_trains_on_the_good_pairs_and_reports_the_dropped_ones(hh_file, micro_base, tmp_path,
                                                                                capsys):
    out = tmp_path / "rm"
    assert cli_main(rm_args(out, micro_base, hh_file, "data.on_invalid=drop")) == 0
    log = capsys.readouterr().out
    assert "dropped 2 invalid row(s) (data.on_invalid=drop): prompts differ: 1, empty rejected response: 1" in log
    assert f"  {hh_file}:4: prompts differ" in log
    summary = json.loads((out / "summary.json").read_text())
    dropped = summary["dropped_rows"]
    assert dropped["count"] == 2
    assert dropped["by_reason"] == {"prompts differ": 1, "empty rejected response": 1}
    assert dropped["by_file"] == {hh_file: 2}
    assert [x.split(": ")[0] for x in dropped["first"]] == [f"{hh_file}:4", f"{hh_file}:7"]
    config = (out / "config.yaml").read_text()
    assert "train_pairs: 12" in config and "on_invalid: drop" in config


def test_on_invalid_drop_for_sft_data(micro_base, tmp_path, capsys):
    rows = [json.dumps({"prompt": f"Question {i}?", "completion": f"Answer number {i}."}) for i in range(6)]
    rows.insert(2, json.dumps({"prompt": "q", "completion": "  "}))
    rows.insert(4, '{"prompt": "unterminated')
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "sft"
    rc = cli_main(sft_args(out, micro_base, f"data.train_file={data}", "data.categories_file=", "data.eval_fraction=0"))
    err = capsys.readouterr().err
    one_error(rc, err, str(data), "data.on_invalid=drop")
    assert f"{data}:3: empty field 'completion'" in err
    assert not out.exists()
    assert cli_main(sft_args(out, micro_base, f"data.train_file={data}", "data.categories_file=",
                             "data.eval_fraction=0", "data.on_invalid=drop")) == 0
    dropped = json.loads((out / "summary.json").read_text())["dropped_rows"]
    assert dropped["count"] == 2 and dropped["by_reason"] == {"empty field 'completion'": 1, "invalid JSON": 1}
    assert json.loads((out / "summary.json").read_text())["train_rows"] == 6


# ----------------------------------------------------------------------------------------------------------
# 11. what used to reach the user as a traceback
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    (b"\x7fELF\x02\x01\x01\x00\x00\x00binary\x00\x00\n", ":1: binary data (a NUL byte)"),
    (b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "ok"}\n', ":2: not UTF-8 text"),
])
def test_binary_or_non_utf8_data_names_file_and_line(content, expected, micro_base, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_bytes(content)
    out = tmp_path / "out"
    rc = cli_main(sft_args(out, micro_base, f"data.train_file={data}"))
    err = capsys.readouterr().err
    one_error(rc, err, str(data))
    assert f"{data}{expected}" in err
    assert not out.exists()


def test_upper_case_and_csv_extensions_load(tmp_path, capsys):
    rows = [json.loads(x) for x in open(os.path.join(ROOT, "data/palms/values_targeted.jsonl"))][:5]
    upper = tmp_path / "SFT.JSONL"
    upper.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import csv

    with open(tmp_path / "sft.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "completion", "category"])
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in ("prompt", "completion", "category")})
    for path in (upper, tmp_path / "sft.csv"):
        assert cli_main(["data", "check", str(path)]) == 0
        assert f"{path}: sft data, 5 rows, 5 valid, 0 problem(s)" in capsys.readouterr().out
    bad = tmp_path / "sft.tsv"
    bad.write_text("prompt\tcompletion\n")
    rc = cli_main(["data", "check", str(bad)])
    line = one_error(rc, capsys.readouterr().err, str(bad))
    assert ".jsonl" in line and ".parquet" in line and ".csv" in line


def test_fp16_on_cpu_says_it_needs_a_gpu(micro_base, tmp_path, capsys):
    import torch
    from deepspeed.accelerator import get_accelerator

    if torch.float16 in get_accelerator().supported_dtypes():
        pytest.skip("this accelerator runs fp16; the refusal is for CPU-only machines")
    out = tmp_path / "out"
    rc = cli_main(sft_args(out, micro_base, "deepspeed.precision=fp16"))
    line = one_error(rc, capsys.readouterr().err, "deepspeed.precision", "GPU")
    assert "bf16 or fp32" in line
    assert not out.exists()


def test_lora_target_module_that_does_not_exist(micro_base, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli_main(sft_args(out, micro_base, "lora.enabled=true", "lora.target_modules=[q_proj,qkv_proj]"))
    line = one_error(rc, capsys.readouterr().err, "lora.target_modules", "'qkv_proj'")
    assert "q_proj" in line.split("adapt:")[1] and "down_proj" in line  # the model's module names
    assert not out.exists()


@pytest.mark.parametrize("text, tokens", [("", "no text (0 tokens)"), ("just a few words", " tokens, fewer than")])
def test_empty_or_too_short_pretrain_text(text, tokens, micro_model_config, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    out = tmp_path / "out"
    rc = cli_main(pretrain_args(out, micro_model_config, f"data.train_files=[{corpus}]", "train.max_steps=1"))
    line = one_error(rc, capsys.readouterr().err, str(corpus), tokens, "one block of 64 tokens")
    if text:
        n = int(line.split(f"{corpus}: ")[1].split(" tokens")[0])
        assert 0 < n < 64
    assert not out.exists()


def test_model_needing_remote_code_while_trust_remote_code_is_false(micro_base, tmp_path, capsys):
    remote = tmp_path / "custom"
    remote.mkdir()
    conf = json.loads(open(os.path.join(micro_base, "config.json")).read())
    conf.update(model_type="my_custom_lm", architectures=["MyCustomForCausalLM"],
                auto_map={"AutoConfig": "configuration_my.MyConfig", "AutoModelForCausalLM": "modeling_my.MyLM"})
    (remote / "config.json").write_text(json.dumps(conf))
    out = tmp_path / "out"
    rc = cli_main(sft_args(out, remote))
    one_error(rc, capsys.readouterr().err, "model.name_or_path", str(remote), "model.trust_remote_code")
    assert not out.exists()


def test_disk_full_while_writing_names_the_path(micro_base, tmp_path, capsys):
    """A real ENOSPC: the file the stage writes atomically (its temporary name) is a link to the full device."""
    dev = full_device(tmp_path)
    run_dir = tmp_path / "pipeline"
    run_dir.mkdir()
    os.symlink(dev, run_dir / f"config.yaml.tmp{os.getpid()}")
    rc = cli_main(["pipeline", PIPELINE, f"run_dir={run_dir}"])
    one_error(rc, capsys.readouterr().err, "no space left on device", str(run_dir / "config.yaml"))

    out = tmp_path / "sft"
    out.mkdir()
    os.symlink(dev, out / f"config.yaml.tmp{os.getpid()}")
    rc = cli_main(sft_args(out, micro_base, "run.overwrite=true"))  # the link is a file rlhf did not write
    line = one_error(rc, capsys.readouterr().err, "no space left on device", str(out / "config.yaml"))
    assert "run the same command to resume" in line


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the rendezvous variables the in-process stages of this pytest run have set."""
    launch = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {**{k: v for k, v in os.environ.items() if k not in launch}, "PYTHONPATH": ROOT, **extra}


def _interrupt(cmd: list[str], ready, env=None, timeout: float = 300) -> tuple[int, str]:
    """Start ``cmd``, wait until ``ready()``, then Ctrl-C it: SIGINT to its whole process group, as a terminal."""
    # SIGINT back to its default in the child: a suite started in the background (`pytest ... &` in a script)
    # inherits SIGINT ignored, and so would the run, which would then never see the Ctrl-C
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    try:
        while not ready():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() - t0 < timeout, "the run did not get ready in time"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def _has_step_checkpoint(out) -> bool:
    ckpt = out / "checkpoints"
    return ckpt.is_dir() and any((ckpt / n / "state.json").exists() for n in os.listdir(ckpt) if n.startswith("step-"))


@pytest.mark.parametrize("when", ["after a checkpoint", "before any checkpoint"])
def test_ctrl_c_prints_one_line_with_the_checkpoint_and_how_to_resume(when, micro_model_config, tmp_path):
    out = tmp_path / "out"
    save = 2 if when == "after a checkpoint" else 100000
    cmd = [sys.executable, "-m", "rlhf.cli", *pretrain_args(out, micro_model_config, "train.max_steps=100000",
                                                            f"run.save_steps={save}")]
    if when == "after a checkpoint":
        rc, err = _interrupt(cmd, lambda: _has_step_checkpoint(out))
        line = one_error(rc, err, "interrupted; the last checkpoint is", str(out / "checkpoints" / "step-"), code=130)
        assert line.endswith("; run the same command to resume")
        named = line.split("the last checkpoint is ")[1].split(";")[0]
        assert os.path.exists(os.path.join(named, "state.json"))
    else:
        # training has begun once the first metrics line is written (the checkpoint directory is made lazily)
        rc, err = _interrupt(cmd, lambda: (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size > 0)
        one_error(rc, err, "interrupted; no checkpoint yet", code=130)
        assert not _has_step_checkpoint(out)


def test_ctrl_c_under_torchrun_prints_once(micro_model_config, tmp_path):
    out = tmp_path / "out"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = clean_env(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", f"--master_port={port}",
           "-m", "rlhf.cli", *pretrain_args(out, micro_model_config, "train.max_steps=100000", "run.save_steps=2",
                                            "deepspeed.micro_batch_size=2")]
    rc, err = _interrupt(cmd, lambda: _has_step_checkpoint(out), env=env)
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err  # torchrun's own report of the signal follows; the ranks print one line
    assert "interrupted; the last checkpoint is " in lines[0] and "run the same command to resume" in lines[0]


# ----------------------------------------------------------------------------------------------------------
# 12. smaller ones
# ----------------------------------------------------------------------------------------------------------

def test_data_check_fails_on_an_empty_file(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc = cli_main(["data", "check", str(empty)])
    one_error(rc, capsys.readouterr().err, str(empty), "empty")


def test_duplicate_yaml_key_is_a_config_error(tmp_path, capsys):
    cfg = tmp_path / "sft.yaml"
    out = tmp_path / "x"
    cfg.write_text(f"run:\n  output_dir: {out}\n  seed: 1\ntrain:\n  epochs: 1\nrun:\n  seed: 2\n")
    rc = cli_main(["sft", str(cfg)])
    line = one_error(rc, capsys.readouterr().err, f"{cfg}:6", "duplicate key 'run'", "line 1")
    cfg.write_text(f"run:\n  seed: 1\n  output_dir: {out}\n  seed: 2\n")
    rc = cli_main(["sft", str(cfg)])
    line = one_error(rc, capsys.readouterr().err, f"{cfg}:4", "duplicate key 'run.seed'", "line 2")
    assert "keep one" in line
    assert not out.exists()


def test_json_error_messages_read_well(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "unterminated\n{"prompt": "a\tb"}\n')
    assert cli_main(["data", "check", str(data)]) == 1
    out = capsys.readouterr().out
    assert f"{data}:2: invalid JSON (Unterminated string starting at column 12)" in out
    assert f"{data}:3: invalid JSON (Invalid control character at column 14)" in out
    assert "at at" not in out


def test_missing_categories_file_names_the_key(micro_base, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli_main(sft_args(out, micro_base, f"data.categories_file={tmp_path}/nosuch.yaml"))
    one_error(rc, capsys.readouterr().err, "data.categories_file", f"{tmp_path}/nosuch.yaml", "no such file")
    assert not out.exists()


@pytest.mark.parametrize("override, key", [
    ("data.train_file=nosuch.jsonl", "data.train_file"),
    ("data.train_file=./nosuch", "data.train_file"),
    ("data.train_file=NOSUCH.PARQUET", "data.train_file"),
    ("model.name_or_path=nosuch_model", "model.name_or_path"),
])
def test_local_looking_names_fail_at_once_without_the_hub(override, key, micro_base, tmp_path, capsys, monkeypatch):
    import datasets
    import transformers

    def no_hub(*a, **k):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(transformers.AutoTokenizer, "from_pretrained", no_hub)
        rc = cli_main(sft_args(out, micro_base, override))
    one_error(rc, capsys.readouterr().err, key, override.split("=", 1)[1], "no such")
    assert not out.exists()
    if key == "data.train_file":  # `rlhf data check` on the same name (it loads data/tokenizer for lengths)
        rc = cli_main(["data", "check", override.split("=", 1)[1]])
        one_error(rc, capsys.readouterr().err, override.split("=", 1)[1], "no such file")


def test_hub_model_that_cannot_be_fetched_is_one_line(tmp_path):
    """An owner/name hub id while offline: transformers' OSError becomes one line naming the key."""
    out = tmp_path / "out"
    env = clean_env(HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "rlhf.cli", *sft_args(out, "nobody-here/no-such-model")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    one_error(proc.returncode, proc.stderr, "model.name_or_path", "nobody-here/no-such-model", "hub")
    assert not out.exists()


def test_compare_with_every_answer_cut_off_is_one_error_line_naming_the_lever(micro_sft, tmp_path, capsys):
    """Every sampled answer cut off at max_new_tokens leaves no pair to label: one error line that says which key to
    raise (it was a traceback)."""
    out = str(tmp_path / "compare")
    rc = cli_main(["compare", os.path.join(ROOT, "configs/tiny/compare.yaml"), f"run.output_dir={out}",
                   f"model.name_or_path={micro_sft}", "run.progress=false", "data.max_prompts=2",
                   "generation.max_new_tokens=1", "generation.temperature=1.0"])
    line = one_error(rc, capsys.readouterr().err, "decided none of", "generation.max_new_tokens")
    assert "'incomplete': 12" in line  # 2 prompts x C(4, 2) pairs, every one with an answer cut off
