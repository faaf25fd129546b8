"""What a run writes and tells: one name for its log, TensorBoard folder, checkpoints and result file; one table on
stdout; the full config in the log file only; a resumed run that never writes its input; and a sentence, not a
traceback, for an unwritable folder, a full disk, a moved last checkpoint or a resume into a model of other sizes."""

import errno
import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import TINY_CLI_FLAGS, write_tiny_dataset

import recbole_flr.checkpoint
from recbole_flr.checkpoint import last_checkpoint_file
from recbole_flr.errors import CheckpointError, UserInputError
from recbole_flr.quick_start import load_data_and_model, run_recbole_flr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "run_recbole_flr.py")
SASREC = {"load_col": {"inter": ["user_id", "item_id", "timestamp"]}}


def _stem(path):
    return os.path.splitext(os.path.basename(path.rstrip("/")))[0]


def _files(folder):
    return {path: open(path, "rb").read() for path in glob.glob(os.path.join(folder, "*"))}


def test_two_runs_with_the_same_settings_in_one_second_write_their_own_files(tiny_config_dict, monkeypatch):
    # RecBole named the log (and TensorBoard) by model, dataset, second and a hash of the config: two runs with the
    # same settings shared them, and a process's second run logged into the first run's file (basicConfig runs once)
    import recbole.utils.logger
    import recbole.utils.utils

    import recbole_flr.run_files
    import recbole_flr.trainer.safe_checkpoint

    for module in (
        recbole.utils.logger,
        recbole.utils.utils,
        recbole_flr.run_files,
        recbole_flr.trainer.safe_checkpoint,
    ):
        if hasattr(module, "get_local_time"):
            monkeypatch.setattr(module, "get_local_time", lambda: "Dec-07-2026_00-00-00")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a fresh process, as a user's (pytest adds its own)
    config = {**tiny_config_dict, **SASREC, "epochs": 1, "state": "INFO"}
    runs = [run_recbole_flr("SASRec", "tiny", config_dict=config) for _ in range(2)]
    for run in runs:
        name = _stem(run["saved_model_file"])
        record = json.load(open(run["result_file"]))
        assert _stem(run["log_file"]) == _stem(run["result_file"]) == _stem(record["tensorboard_dir"]) == name
        assert os.path.isdir(record["tensorboard_dir"]) and os.path.isfile(
            last_checkpoint_file(run["saved_model_file"])
        )
        assert record["log_file"] == run["log_file"] and record["checkpoint"] == os.path.abspath(
            run["saved_model_file"]
        )
    assert runs[0]["log_file"] != runs[1]["log_file"]
    first_log = open(runs[0]["log_file"]).read()
    assert _stem(runs[0]["saved_model_file"]) in first_log and _stem(runs[1]["saved_model_file"]) not in first_log
    # one format for the metrics, fresh or resumed: a float and dicts of floats
    resumed = run_recbole_flr(
        "SASRec", "tiny", config_dict={**config, "resume_from": last_checkpoint_file(runs[0]["saved_model_file"])}
    )
    for run in runs + [resumed]:
        assert type(run["best_valid_score"]) is float
        assert all(type(run[key]) is dict for key in ("best_valid_result", "test_result"))
        assert all(type(v) is float for key in ("best_valid_result", "test_result") for v in run[key].values())
    assert json.load(open(resumed["result_file"]))["resumed_from"] == os.path.abspath(
        last_checkpoint_file(runs[0]["saved_model_file"])
    )
    # loading a checkpoint after a run logs to a file of its own, not into that run's log
    size = os.path.getsize(resumed["log_file"])
    load_data_and_model(runs[0]["saved_model_file"])
    assert os.path.getsize(resumed["log_file"]) == size


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("cli_run"))
    data = os.path.join(tmp, "data")
    write_tiny_dataset(data)
    flags = [flag for flag in TINY_CLI_FLAGS if not flag.startswith("--state")]
    command = [sys.executable, SCRIPT, "--model=FLR", "--dataset=tiny", f"--data_path={data}", *flags]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=tmp, env=dict(os.environ, PYTHONPATH=REPO)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (result_file,) = glob.glob(os.path.join(tmp, "saved", "*.json"))
    return {"tmp": tmp, "stdout": result.stdout, "stderr": result.stderr, "record": json.load(open(result_file))}


def test_the_command_line_prints_one_table_of_best_valid_and_test_metrics_on_stdout(cli_run):
    record, stdout = cli_run["record"], cli_run["stdout"]
    rows = {
        m.group(1): (float(m.group(2)), float(m.group(3)))
        for m in re.finditer(r"^(\S+@\d+)\s+([0-9.e-]+)\s+([0-9.e-]+)$", stdout, re.M)
    }
    assert rows and set(rows) == set(record["test_result"]) == set(record["best_valid_result"])
    for metric, (valid, test) in rows.items():
        assert valid == pytest.approx(record["best_valid_result"][metric], rel=1e-5)
        assert test == pytest.approx(record["test_result"][metric], rel=1e-5)
    assert record["checkpoint"].endswith(stdout.split("checkpoint:")[1].split()[0])
    assert "INFO" not in stdout and "Training plan" in cli_run["stderr"]  # the log stays on stderr
    assert "\x1b[" not in stdout + cli_run["stderr"]  # redirected: no colour codes


def test_the_result_file_holds_the_run_its_settings_and_metrics_as_plain_data(cli_run):
    record = cli_run["record"]
    assert (record["model"], record["dataset"], record["valid_metric"]) == ("FLR", "tiny", "mrr@10")
    assert record["settings"]["n_factors"] == 2 and record["settings"]["hidden_size"] == 16
    assert record["best_valid_score"] == record["best_valid_result"]["mrr@10"]
    assert record["best_epoch"] in (0, 1) and record["best_stage"] in ("sft", "grpo")
    assert _stem(record["checkpoint"]) == _stem(record["log_file"]) == _stem(record["tensorboard_dir"])
    assert record["last_checkpoint"] == last_checkpoint_file(record["checkpoint"])
    for key in ("checkpoint", "last_checkpoint", "log_file"):
        assert os.path.isfile(record[key]), key
    assert 0 < record["wall_time_s"] < 600 and record["resumed_from"] is None
    checkpoint = torch.load(record["checkpoint"], weights_only=True)
    assert checkpoint["epoch"] == record["best_epoch"] and checkpoint["stage"] == record["best_stage"]


def test_the_full_config_and_the_model_structure_go_to_the_log_file_not_the_console(cli_run):
    console, log = cli_run["stderr"], open(cli_run["record"]["log_file"]).read()
    for dumped in ("General Hyper Parameters", "Other Hyper Parameters", "Trainable parameters:", "Environment"):
        assert dumped in log and dumped not in console, dumped
    assert len(console.splitlines()) < 60  # was ~230 lines on this run, ~150 of them the config
    assert "Settings given" in console and "n_factors=2" in console


@pytest.mark.parametrize("case", ["file", "read-only", "empty"])
def test_a_checkpoint_dir_that_cannot_be_written_is_refused_before_training(tiny_config_dict, tmp_path, case):
    if case == "empty":  # --checkpoint_dir=~ is None
        with pytest.raises(UserInputError, match=r"checkpoint_dir is None \(~ or empty\)"):
            run_recbole_flr("SASRec", "tiny", config_dict={**tiny_config_dict, **SASREC, "checkpoint_dir": None})
        return
    if case == "file":
        folder = tmp_path / "saved-file"
        folder.write_text("not a folder")
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):  # root writes anyway: a folder even root cannot write in
            folder = "/sys/kernel"
            if not os.path.isdir(folder) or os.access(folder, os.W_OK) and _writable(folder):
                pytest.skip("no folder that this user cannot write")
    events = []
    # a file is refused with the settings (config.py), a folder it cannot write in when the run's folders are made
    with pytest.raises(
        UserInputError, match=rf"checkpoint_dir.{{1,2}}'{re.escape(str(folder))}'.*(file|denied|ermission)"
    ):
        run_recbole_flr(
            "FLR",
            "tiny",
            config_dict={**tiny_config_dict, "checkpoint_dir": str(folder)},
            callbacks=[lambda event, info: events.append(event)],
        )
    assert events == []  # nothing was loaded or trained


def _writable(folder):
    try:
        open(os.path.join(folder, ".recbole-flr-probe"), "w").close()
    except OSError:
        return False
    os.remove(os.path.join(folder, ".recbole-flr-probe"))
    return True


def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_previous_version(tiny_config_dict, monkeypatch):
    real, calls = torch.save, []

    def full_disk(state, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the best model of epoch 1 (epoch 0's best, then the last checkpoint, came first)
            with open(path, "wb") as f:
                f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(state, path, *args, **kwargs)

    monkeypatch.setattr(recbole_flr.checkpoint.torch, "save", full_disk)
    config = {**tiny_config_dict, **SASREC, "epochs": 3, "learning_rate": 0.01}
    with pytest.raises(CheckpointError, match=r"Cannot write .*\.pth: No space left on device .*MiB free") as error:
        run_recbole_flr("SASRec", "tiny", config_dict=config)
    best = str(error.value).split("Cannot write ")[1].split(":")[0]
    assert torch.load(best, weights_only=True)["epoch"] == 0  # epoch 0's best model, whole
    assert not glob.glob(os.path.join(config["checkpoint_dir"], "*.tmp-*"))


def test_a_result_file_that_cannot_be_written_is_reported_and_the_metrics_still_returned(tiny_config_dict, monkeypatch):
    import recbole_flr.run_files

    real = recbole_flr.run_files.atomic_write

    def full_disk(path, write):
        def fail(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device")

        real(path, write if path.endswith(".pth") else fail)

    monkeypatch.setattr(recbole_flr.run_files, "atomic_write", full_disk)
    result = run_recbole_flr("SASRec", "tiny", config_dict={**tiny_config_dict, **SASREC, "state": "INFO"})
    assert result["result_file"] is None and result["test_result"] and os.path.isfile(result["saved_model_file"])
    assert "No result file: Cannot write" in open(result["log_file"]).read()
    assert not glob.glob(os.path.join(tiny_config_dict["checkpoint_dir"], "*.json"))


@pytest.fixture
def sft_run(tiny_config_dict):
    config = {**tiny_config_dict, "train_stages": ["sft"], "epochs": 2, "n_factors": 2}
    return config, run_recbole_flr("FLR", "tiny", config_dict=config)


def test_resuming_a_model_of_other_sizes_is_a_clear_error_naming_the_settings(sft_run):
    config, first = sft_run
    last = last_checkpoint_file(first["saved_model_file"])
    with pytest.raises(CheckpointError, match=r"\[.*16\] in the file, \[.*32\] here.*'hidden_size'"):
        run_recbole_flr("FLR", "tiny", config_dict={**config, "hidden_size": 32, "inner_size": 64, "resume_from": last})


def test_a_last_checkpoint_moved_without_its_best_model_is_refused_before_training(sft_run, tmp_path):
    config, first = sft_run
    last = last_checkpoint_file(first["saved_model_file"])
    moved = tmp_path / "elsewhere" / "renamed.pth"
    moved.parent.mkdir()
    shutil.copy(last, moved)
    events = []
    with pytest.raises(CheckpointError, match=r"renamed\.pth is the last checkpoint of a run whose best model is not"):
        run_recbole_flr(
            "FLR",
            "tiny",
            config_dict={**config, "epochs": 3, "resume_from": str(moved)},
            callbacks=[lambda event, info: events.append(event)],
        )
    assert "train_epoch" not in events
    # renamed in its own folder: the best model is found by the name the last checkpoint records
    renamed = os.path.join(os.path.dirname(last), "renamed.pth")
    os.replace(last, renamed)
    resumed = run_recbole_flr("FLR", "tiny", config_dict={**config, "epochs": 3, "resume_from": renamed})
    assert os.path.isfile(resumed["saved_model_file"]) and resumed["saved_model_file"] != first["saved_model_file"]


def test_grpo_from_a_best_checkpoint_never_writes_that_checkpoint(sft_run):
    # GRPO alone saves its starting weights (the bar) at once: it rewrote the file resume_from names, in place
    config, first = sft_run
    before = _files(config["checkpoint_dir"])
    grpo = run_recbole_flr(
        "FLR",
        "tiny",
        config_dict={**config, "train_stages": ["grpo"], "grpo_epochs": 1, "resume_from": first["saved_model_file"]},
    )
    assert {path: _files(config["checkpoint_dir"])[path] for path in before} == before
    assert grpo["saved_model_file"] not in before and os.path.isfile(grpo["saved_model_file"])
    assert json.load(open(grpo["result_file"]))["resumed_from"] == os.path.abspath(first["saved_model_file"])


def test_saved_false_writes_nothing_to_the_checkpoint_dir_and_still_tests(tiny_config_dict):
    config = {**tiny_config_dict, **SASREC, "checkpoint_dir": tiny_config_dict["checkpoint_dir"] + "-unused"}
    result = run_recbole_flr("SASRec", "tiny", config_dict=config, saved=False)
    assert result["saved_model_file"] is None and result["result_file"] is None
    assert result["test_result"] and all(type(v) is float for v in result["test_result"].values())
    assert not os.path.exists(config["checkpoint_dir"]) or not os.listdir(config["checkpoint_dir"])


def test_ctrl_c_during_training_says_how_to_resume(tiny_config_dict):
    def interrupt(event, info):
        if event == "train_epoch" and info["epoch"] == 1:
            raise KeyboardInterrupt

    config = {**tiny_config_dict, **SASREC, "epochs": 3}
    with pytest.raises(KeyboardInterrupt):
        run_recbole_flr("SASRec", "tiny", config_dict=config, callbacks=[interrupt])
    (log_file,) = glob.glob(os.path.join("log", "SASRec", "*.log"))
    last = re.search(r"Interrupted\. To continue: the same command with --resume_from=(\S+)", open(log_file).read())
    assert last and os.path.isfile(last.group(1)) and _stem(last.group(1)) == _stem(log_file) + "-last"


def test_the_robustness_benchmark_evaluates_the_best_model_not_the_newer_last_checkpoint(tmp_path):
    from conftest import benchmark_script

    robustness = benchmark_script("robustness")
    for name in ("FLR-tiny-a.pth", "FLR-tiny-a-last.pth", "SASRec-tiny-b.pth"):  # in this order: the last is newer
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1e9 + len(name), 1e9 + len(name)))
    assert robustness.best_checkpoint(str(tmp_path), "FLR") == str(tmp_path / "FLR-tiny-a.pth")
    assert robustness.best_checkpoint(str(tmp_path), "BERT4Rec") is None
