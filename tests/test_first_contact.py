"""What a new user meets on a first run: the training plan, the log file and the resumable checkpoint named first,
loss terms by name, informative GRPO statistics, no RecBole deprecation warnings, the fast default, baselines that
load the same columns as FLR on a custom dataset, and internal errors that keep their traceback."""

import glob
import math
import os
import re
import runpy
import subprocess
import sys
import types

import pytest
from conftest import write_tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "run_recbole_flr.py")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("first_run"))
    data = os.path.join(tmp, "data")
    write_tiny_dataset(data)
    command = [
        sys.executable,
        SCRIPT,
        "--model=FLR",
        "--dataset=tiny",
        f"--data_path={data}",
        "--hidden_size=16",
        "--inner_size=32",
        "--n_layers=1",
        "--n_factors=2",
        "--MAX_ITEM_LIST_LENGTH=10",
        "--epochs=1",
        "--grpo_epochs=1",
        "--show_progress=False",
        "--gpu_id=",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=tmp, env=dict(os.environ, PYTHONPATH=REPO)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (log_file,) = glob.glob(os.path.join(tmp, "log", "FLR", "*.log"))
    with open(log_file) as f:
        log = ANSI.sub("", f.read())
    return {"tmp": tmp, "console": ANSI.sub("", result.stdout + result.stderr), "log": log, "log_file": log_file}


def test_the_first_lines_say_how_many_epochs_of_each_stage_run(first_run):
    first = first_run["log"].splitlines()[0]
    assert "Training plan: SFT up to 1 epochs" in first and "then GRPO up to 1 epochs" in first
    assert "at most 2 epochs in all" in first


def test_the_log_names_itself_and_the_resumable_checkpoint(first_run):
    head = "\n".join(first_run["log"].splitlines()[:3])
    assert f"Log file: {first_run['log_file']}" in head
    last = re.search(r"the state after every epoch to (\S+-last\.pth)", first_run["log"])
    assert last and os.path.isfile(os.path.join(first_run["tmp"], last.group(1)))
    assert "--resume_from" in first_run["log"]


def test_loss_terms_are_named_in_the_log_and_tensorboard(first_run):
    log = first_run["log"]
    assert "train_loss1" not in log
    sft = re.search(r"epoch 0 training \[.*", log).group(0)
    assert all(f"{name}: " in sft for name in ("ce", "orth", "div", "sparse"))
    grpo = re.search(r"epoch 1 training \[.*", log).group(0)
    assert all(f"{name}: " in grpo for name in ("grpo_surrogate", "kl", "orth", "div", "sparse"))
    stats = dict(re.findall(r"(reward_mean|reward_std|adv_std|thought_norm|thought_shift): (-?[0-9.]+)", grpo))
    assert set(stats) == {"reward_mean", "reward_std", "adv_std", "thought_norm", "thought_shift"}
    assert float(stats["thought_norm"]) > 0 and float(stats["adv_std"]) > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for folder in glob.glob(os.path.join(first_run["tmp"], "log_tensorboard", "*")):
        events = EventAccumulator(folder)
        events.Reload()
        tags.update(events.Tags()["scalars"])
    assert {"Loss/sft/ce", "Loss/sft/orth", "Loss/grpo/grpo_surrogate", "Loss/grpo/kl"} <= tags
    assert {"GRPO/thought_norm", "GRPO/thought_shift"} <= tags


def test_no_recbole_deprecation_warning_reaches_the_console(first_run):
    assert "GradScaler" not in first_run["console"] and "FutureWarning" not in first_run["console"]


def test_the_fast_mode_is_the_default(tiny_config_dict):
    from recbole_flr import Config

    config = Config(model="FLR", dataset="tiny", config_dict=tiny_config_dict)
    assert config["train_all_positions"] is True


def test_tilde_on_the_command_line_is_none_as_in_a_yaml_file(tiny_config_dict, monkeypatch):
    # RecBole's reader keeps --key=~ as the string "~": --llm_path=~ (FLR.yaml: "~ for the embedded one") then tried
    # to load the home folder as a pretrained LLM
    from recbole_flr.quick_start import prepare

    flags = ["--llm_path=~", "--llm_gguf_file=~", "--item_text_encoder=~", "--item_text_field=~"]
    monkeypatch.setattr(sys, "argv", ["run_recbole_flr.py", *flags])
    config, model, *_ = prepare("FLR", "tiny", config_dict=tiny_config_dict)
    assert [config[flag[2:].split("=")[0]] for flag in flags] == [None] * 4
    assert not model.backbone.pretrained and model.item_text_field is None and model.item_text_encoder is None


@pytest.mark.parametrize("model", ["SASRec", "BERT4Rec", "GRU4Rec", "SASRecAllPos", "FLR"])
def test_every_sequential_model_loads_the_columns_flr_loads(tiny_config_dict, model):
    from recbole_flr import Config

    settings = {key: value for key, value in tiny_config_dict.items() if key != "load_col"}  # the user's own data
    config = Config(model=model, dataset="tiny", config_dict=settings)
    assert config["load_col"]["inter"] == ["user_id", "item_id", "timestamp"]
    assert ("item" in config["load_col"]) == (model == "FLR")  # the title only for the model that reads it


def test_sasrec_runs_on_a_custom_dataset_with_a_timestamp_as_is(tiny_config_dict):
    from recbole_flr import run_recbole_flr

    settings = {key: value for key, value in tiny_config_dict.items() if key != "load_col"}
    result = run_recbole_flr("SASRec", "tiny", config_dict=settings)
    assert all(math.isfinite(value) for value in result["test_result"].values())


def test_an_internal_error_keeps_its_traceback(monkeypatch, tiny_dataset_dir):
    import recbole_flr.quick_start

    def broken(*args, **kwargs):
        raise ValueError("an internal bug, not the user's input")

    monkeypatch.setattr(recbole_flr.quick_start, "run", broken)
    monkeypatch.setattr(sys, "argv", [SCRIPT, "--model=FLR", "--dataset=tiny", f"--data_path={tiny_dataset_dir}"])
    with pytest.raises(ValueError, match="internal bug"):  # not turned into a one-line "user error"
        runpy.run_path(SCRIPT, run_name="__main__")


def test_grpo_alone_starts_from_the_checkpoint_resume_from_names(tiny_config_dict):
    from recbole_flr import run_recbole_flr
    from recbole_flr.errors import UserInputError

    with pytest.raises(UserInputError, match="resume_from"):  # refused before anything is loaded
        run_recbole_flr("FLR", "tiny", config_dict={**tiny_config_dict, "train_stages": ["grpo"]})
    sft = run_recbole_flr("FLR", "tiny", config_dict={**tiny_config_dict, "train_stages": ["sft"]})
    grpo = run_recbole_flr(
        "FLR",
        "tiny",
        config_dict={
            **tiny_config_dict,
            "train_stages": ["grpo"],
            "grpo_epochs": 1,
            "resume_from": sft["saved_model_file"],
        },
    )
    assert grpo["best_valid_score"] >= sft["best_valid_score"]  # GRPO's bar is the SFT checkpoint's score


def test_two_runs_started_at_once_in_one_folder_do_not_race_for_its_log_and_checkpoint_folders(
    tiny_config_dict, monkeypatch
):
    # RecBole's ensure_dir checks, then creates: when another run creates the folder in between, makedirs raises.
    # Played here by a makedirs that always loses that race: the run must create its folders before RecBole looks.
    import recbole.utils.utils as recbole_utils

    from recbole_flr import run_recbole_flr

    def losing_makedirs(name, *args, **kwargs):
        raise FileExistsError(f"[Errno 17] File exists: '{name}'")

    losing_os = types.ModuleType("os")
    losing_os.__dict__.update(os.__dict__, makedirs=losing_makedirs)
    monkeypatch.setattr(recbole_utils, "os", losing_os)
    config = dict(tiny_config_dict, train_stages=["sft"], checkpoint_dir=tiny_config_dict["checkpoint_dir"] + "-new")
    result = run_recbole_flr("FLR", "tiny", config_dict=config)
    assert os.path.isfile(result["saved_model_file"])
    assert os.path.isdir(os.path.join("log", "FLR"))
