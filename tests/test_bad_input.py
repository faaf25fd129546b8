"""The bad-input catalogue: through the command line, each case ends in one message that names the problem and a
non-zero exit, never a traceback; a few awkward but valid inputs train normally."""

import math
import os
import runpy
import subprocess
import sys

import pytest
from conftest import TINY_CLI_FLAGS, write_tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "run_recbole_flr.py")
TINY = [
    "--load_col={'inter': ['user_id', 'item_id', 'timestamp'], 'item': ['item_id', 'title']}",
    "--train_batch_size=64",
    *TINY_CLI_FLAGS,
]


def run_cli(monkeypatch, *args):
    r"""Run run_recbole_flr.py in this process; returns (exit code, message)."""
    monkeypatch.setattr(sys, "argv", [SCRIPT, *args])
    try:
        runpy.run_path(SCRIPT, run_name="__main__")
    except SystemExit as stop:
        return (1 if isinstance(stop.code, str) else stop.code), str(stop.code)
    return 0, ""


def tiny_args(data_path, *extra):
    overridden = {arg.split("=", 1)[0] for arg in extra}
    defaults = [arg for arg in TINY if arg.split("=", 1)[0] not in overridden]
    return ["--model=FLR", "--dataset=tiny", f"--data_path={data_path}", *defaults, *extra]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--n_factors=0"], "n_factors"),
        (["--lambda_div=-0.5"], "lambda_div"),
        (["--grpo_num_generations=1"], "grpo_num_generations"),
        (["--grpo_reward=accuracy"], "grpo_reward"),
        (["--train_stages=['sft', 'dpo']"], "train_stages"),
        (["--item_text_field=plot"], "item_text_field"),
        (["--llm_path=/no/such/model"], "llm_path"),
        (["--llm_arch=gpt9"], "llm_arch"),
    ],
)
def test_bad_flr_keys_are_named(monkeypatch, tiny_dataset_dir, extra, expected):
    code, message = run_cli(monkeypatch, *tiny_args(tiny_dataset_dir, *extra))
    assert code != 0 and expected in message
    # the plugin's one-line report of a user error, not another exception's text
    first, *rest = message.splitlines()
    assert first.startswith("recbole_flr: error: ") and rest == ["(set RECBOLE_FLR_TRACEBACK=1 to see the traceback)"]


def test_bad_llm_paths_are_named(monkeypatch, tiny_dataset_dir, tiny_llm_dir, tmp_path):
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("weights elsewhere")
    code, message = run_cli(monkeypatch, *tiny_args(tiny_dataset_dir, f"--llm_path={not_a_model}"))
    assert code != 0 and f"llm_path={str(not_a_model)!r} is not a causal LM" in message
    code, message = run_cli(
        monkeypatch,
        *tiny_args(tiny_dataset_dir, f"--llm_path={tiny_llm_dir}", "--lora_target_modules=['query_key_value']"),
    )
    assert code != 0 and "lora_target_modules" in message and "q_proj" in message


def test_malformed_yaml_and_unknown_model(monkeypatch, tiny_dataset_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_factors: [3\n")
    code, message = run_cli(monkeypatch, *tiny_args(tiny_dataset_dir), f"--config_files={bad}")
    assert code != 0 and "bad.yaml is not valid YAML" in message
    code, message = run_cli(monkeypatch, "--model=FLRX", "--dataset=tiny", f"--data_path={tiny_dataset_dir}")
    assert code != 0 and "Unknown model [FLRX]" in message


def write_inter(folder, text):
    os.makedirs(os.path.join(folder, "broken"), exist_ok=True)
    with open(os.path.join(folder, "broken", "broken.inter"), "w") as f:
        f.write(text)


@pytest.mark.parametrize(
    "inter, expected",
    [
        (None, "broken.inter does not exist"),
        ("", "broken.inter is empty"),
        ("user_id:token\titem_id:token\ttimestamp:float\n", "has a header but no interactions"),
        ("user_id:token\titem_id:token\n1\t2\n", "no column 'timestamp'"),
        ("uid:token\titem_id:token\ttimestamp:float\n1\t2\t0\n", "no column 'user_id'"),
    ],
)
def test_broken_interaction_files_are_named(monkeypatch, tmp_path, inter, expected):
    os.makedirs(tmp_path / "data" / "broken")
    if inter is not None:
        write_inter(str(tmp_path / "data"), inter)
    monkeypatch.chdir(tmp_path)
    code, message = run_cli(
        monkeypatch,
        "--model=SASRec",
        "--dataset=broken",
        f"--data_path={tmp_path / 'data'}",
        "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}",
        "--gpu_id=",
    )
    assert code != 0 and expected in message


def test_contradicting_command_line_values(monkeypatch, tiny_dataset_dir):
    code, message = run_cli(monkeypatch, *tiny_args(tiny_dataset_dir), "--epochs=1", "--epochs=2")
    assert code != 0 and "--epochs=2" in message


def test_too_many_processes(monkeypatch, tiny_dataset_dir):
    code, message = run_cli(monkeypatch, *tiny_args(tiny_dataset_dir), "--nproc=4096")
    assert code != 0 and "--nproc=4096" in message


def test_exit_status_and_no_traceback_in_a_real_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run(
        [sys.executable, SCRIPT, "--model=SASRec", "--dataset=nowhere", f"--data_path={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 1
    assert "Dataset [nowhere] not found" in result.stderr and "Traceback" not in result.stderr


def test_single_interaction_users_and_empty_titles_train(tmp_path, monkeypatch):
    path = write_tiny_dataset(str(tmp_path / "data"), empty_title_items=(3, 7, 11))
    with open(os.path.join(path, "tiny.inter"), "a") as f:
        f.write("900\t5\t0\n901\t6\t0\n")  # two users with one interaction each
    monkeypatch.chdir(tmp_path)
    from recbole_flr import run_recbole_flr

    config = {arg[2:].split("=", 1)[0]: arg[2:].split("=", 1)[1] for arg in TINY}
    monkeypatch.setattr(sys, "argv", ["pytest"])
    result = run_recbole_flr("FLR", "tiny", config_dict=dict(config, data_path=str(tmp_path / "data")))
    assert all(math.isfinite(value) for value in result["test_result"].values())
