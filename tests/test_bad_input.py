"""The bad-input catalogue: through the command line, each case ends in one message that names the problem and a
non-zero exit, never a traceback; a few awkward but valid inputs train normally."""

import glob
import math
import os
import runpy
import subprocess
import sys

import pytest
import torch
from conftest import TINY_CLI_FLAGS, write_tiny_dataset

from recbole_flr.errors import UserInputError

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


@pytest.mark.parametrize(
    "model, extra, expected",
    [
        ("KSR", [], ["KSR needs a knowledge graph", "tiny.kg", "tiny.link", "tiny.ent"]),
        ("GRU4RecKG", [], ["GRU4RecKG needs a knowledge graph", "tiny.kg"]),
        ("S3Rec", [], ["item_attribute", "['class']", "load_col"]),
        ("S3Rec", ["--item_attribute=title"], ["S3Rec (train_stage='pretrain'", "cannot run through recbole_flr"]),
        ("FDSA", [], ["selected_features", "['class']", "load_col"]),
        ("FEARec", ["--n_layers=1"], ["FEARec needs n_layers >= 2"]),
        ("GRU4Rec", ["--n_heads=2"], ["'n_heads'", "not of GRU4Rec"]),
        ("SASRecCPR", ["--reranker_CAN_NUM=20,100"], ["reranker_CAN_NUM=(20, 100)", "descending"]),
        ("GRU4RecCPR", ["--n_facet_all=4"], ["n_facet_all=4", "= 5"]),
        # after the dataset is read, before the model is built: 100 candidates among tiny's 61 items
        ("SASRecCPR", [], ["reranker_CAN_NUM=100", "61 items", "at most 61"]),
    ],
)
def test_what_a_model_needs_is_named_before_the_data(monkeypatch, tiny_dataset_dir, model, extra, expected):
    load_col = "--load_col={'inter': ['user_id', 'item_id', 'timestamp'], 'item': ['item_id', 'title']}"
    args = [f"--model={model}", "--dataset=tiny", f"--data_path={tiny_dataset_dir}", load_col, "--gpu_id=", *extra]
    code, message = run_cli(monkeypatch, *args)
    assert code != 0 and message.startswith("recbole_flr: error: ")
    assert all(part in message for part in expected), message


def test_every_documented_range_of_recbole_reads():
    # SHAN.yaml writes its range in reStructuredText (``['BPR', 'CE']``): the reader stopped every SHAN run
    from recbole_flr.config import RECBOLE_PROPERTIES_DIR, read_documented_keys

    paths = sorted(glob.glob(os.path.join(RECBOLE_PROPERTIES_DIR, "**", "*.yaml"), recursive=True))
    documented = {os.path.basename(path): read_documented_keys(path) for path in paths}
    assert documented["SHAN.yaml"]["loss_type"][1] == ["BPR", "CE"]
    assert len(documented) > 90


def test_a_float_setting_written_as_an_integer_trains(tiny_config_dict):
    from recbole_flr import prepare
    from recbole_flr.config import Config, validate

    config = Config("FLR", "tiny", config_dict=dict(tiny_config_dict, initializer_range=1, attn_dropout_prob=0))
    validate(config)
    assert config["initializer_range"] == 1.0 and isinstance(config["initializer_range"], float)
    model = prepare(config=config)[1]  # transformers' config refused the int 1 (and 0)
    assert model.backbone.body.config.initializer_range == 1.0


def test_use_gpu_says_what_runs(monkeypatch, tiny_config_dict):
    from recbole_flr.config import Config, validate

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))  # RecBole sets it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Config("SASRec", "tiny", config_dict=tiny_config_dict)["use_gpu"] is False  # the default was True
    config = Config("SASRec", "tiny", config_dict=dict(tiny_config_dict, use_gpu=True))
    with pytest.raises(UserInputError, match="use_gpu=True .* but the run would use the CPU"):
        validate(config)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = Config("SASRec", "tiny", config_dict=dict(tiny_config_dict, gpu_id="0", use_gpu=False))
    assert config["device"] == torch.device("cpu")  # RecBole 1.2.1 picked the GPU from gpu_id alone


def test_a_key_of_another_model_is_named_with_its_owner():
    from recbole_flr.config import check_foreign_keys, foreign_keys

    assert foreign_keys("SASRec", ["n_factors", "hidden_size", "epochs", "load_col"]) == {
        "n_factors": ["FLR", "DGCF", "KGIN"]
    }
    assert foreign_keys("FLR", ["n_factors", "grpo_epochs", "hidden_size", "MAX_ITEM_LIST_LENGTH"]) == {}
    assert set(foreign_keys("GRU4Rec", ["n_heads", "inner_size", "num_layers"])) == {"n_heads", "inner_size"}
    with pytest.raises(UserInputError, match=r"'grpo_epochs' \(in my.yaml\) is a setting of FLR, not of SASRecAllPos"):
        check_foreign_keys("SASRecAllPos", ["item_text_encoder", "grpo_epochs"], where=lambda key: "my.yaml")


def test_an_empty_config_file_is_no_settings(tiny_config_dict, tmp_path):
    from recbole_flr.config import Config

    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "comments.yaml").write_text("# n_factors: 3\n")
    files = [str(tmp_path / "empty.yaml"), str(tmp_path / "comments.yaml")]
    config = Config("FLR", "tiny", config_file_list=files, config_dict=tiny_config_dict)
    assert config["n_factors"] == 4  # FLR.yaml's default
