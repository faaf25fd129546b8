"""Interrupted training: the resumable last checkpoint, resuming after SIGKILL in either FLR stage on the uninterrupted
trajectory (exact equality on CPU), and NaN/inf losses that stop with a named position and keep the good checkpoints."""

import glob
import math
import os
import random
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from recbole_flr.checkpoint import get_rng_state, last_checkpoint_file, set_rng_state
from recbole_flr.errors import CheckpointError, NonFiniteLossError
from recbole_flr.quick_start import prepare, run_recbole_flr
from recbole_flr.trainer import FLRTrainer, SafeCheckpointMixin

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# SFT improves at every epoch and GRPO at both of its epochs here, so the best model changes after each kill point
FLR_RUN = {
    "epochs": 4,
    "learning_rate": 0.0003,
    "train_stages": ["sft", "grpo"],
    "grpo_epochs": 2,
    "grpo_learning_rate": 0.001,
    "grpo_num_generations": 4,
    "grpo_beta": 0.1,
    "n_factors": 2,
}
WAIT_S = 120  # bound on waiting for a child's last checkpoint (a child needs a few seconds)

# The child: run_recbole_flr.py as from the command line, except that it stops (sleeps) at batch 1 of one epoch of one
# stage, which changes nothing it computes, so that the parent's SIGKILL lands in the middle of that epoch.
CHILD = r"""
import os, runpy, sys, time
import torch
torch.set_num_threads(1)
from recbole_flr.trainer import SafeCheckpointMixin
stage, epoch = os.environ["PAUSE_AT"].split(":")
real = SafeCheckpointMixin._check_nan
def check_nan(self, loss):
    real(self, loss)
    if (self.stage or "train") == stage and self._loss_position == [int(epoch), 1]:
        time.sleep(600)
SafeCheckpointMixin._check_nan = check_nan
script = os.path.join(os.environ["REPO"], "run_recbole_flr.py")
sys.argv = [script] + sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def _flr_config(tiny_config_dict, checkpoint_dir):
    return {**tiny_config_dict, **FLR_RUN, "checkpoint_dir": str(checkpoint_dir)}


def _start_child(args, pause_at, cwd, name):
    env = dict(os.environ, PYTHONPATH=REPO, REPO=REPO, PAUSE_AT=pause_at, OMP_NUM_THREADS="1")
    out = open(os.path.join(cwd, f"{name}.log"), "w")  # a file, not a pipe: a full pipe would block the child
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=cwd, env=env, stdout=out, stderr=out)
    out.close()
    return proc


def _kill_when(proc, folder, ready, cwd, name):
    r"""SIGKILL ``proc`` once a last checkpoint in ``folder`` satisfies ``ready``; return its path and content."""
    deadline = time.monotonic() + WAIT_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = open(os.path.join(cwd, f"{name}.log")).read()[-3000:]
                pytest.fail(f"{name} exited ({proc.returncode}) before its last checkpoint was ready:\n{log}")
            for path in glob.glob(os.path.join(folder, "*-last.pth")):
                try:
                    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
                except Exception:  # noqa: BLE001 - being replaced; the next poll reads it
                    continue
                if ready(checkpoint):
                    proc.kill()
                    assert proc.wait(timeout=30) == -9
                    return path, checkpoint
            time.sleep(0.05)
        log = open(os.path.join(cwd, f"{name}.log")).read()[-3000:]
        pytest.fail(f"{name}: no ready last checkpoint in {folder} after {WAIT_S} s:\n{log}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _same_weights(file_a, file_b):
    a = torch.load(file_a, map_location="cpu", weights_only=True)
    b = torch.load(file_b, map_location="cpu", weights_only=True)
    assert (a["epoch"], a["stage"], a["best_valid_score"]) == (b["epoch"], b["stage"], b["best_valid_score"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    return all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_flr_killed_in_sft_then_in_grpo_resumes_to_the_uninterrupted_result(tiny_config_dict, tmp_path):
    straight = run_recbole_flr("FLR", "tiny", config_dict=_flr_config(tiny_config_dict, tmp_path / "straight"))

    chain = tmp_path / "chain"
    settings = tmp_path / "run.yaml"
    settings.write_text(yaml.safe_dump(_flr_config(tiny_config_dict, chain)))
    args = ["--model=FLR", "--dataset=tiny", f"--config_files={settings}"]

    # 1. killed during SFT epoch 2: the last checkpoint holds SFT epoch 1
    child = _start_child(args, "sft:2", tmp_path, "child1")
    last, checkpoint = _kill_when(child, chain, lambda c: c["epoch"] >= 1, tmp_path, "child1")
    assert (checkpoint["stage"], checkpoint["epoch"], checkpoint["fit_finished"]) == ("sft", 1, False)
    best = last[: -len("-last.pth")] + ".pth"
    assert os.path.basename(best) == checkpoint["best_model_file"] and os.path.isfile(best)
    assert set(checkpoint["rng"]) >= {"torch", "numpy", "python", "train_loader"}
    assert isinstance(checkpoint["best_valid_result"], dict) and "optimizer" in checkpoint
    first_files = {path: open(path, "rb").read() for path in (best, last)}

    # 2. resumed from the command line, killed during GRPO epoch 5 (GRPO is epochs 4-5): the resumed run writes its own
    # files (the last holds GRPO epoch 4) and never the ones it resumed from
    child = _start_child(args + [f"--resume_from={last}"], "grpo:5", tmp_path, "child2")
    ready = lambda c: c["stage"] == "grpo" and c["epoch"] >= 4  # noqa: E731
    last2, checkpoint = _kill_when(child, chain, ready, tmp_path, "child2")
    assert last2 != last and checkpoint["epoch"] == 4 and checkpoint["stage_start_epoch"] == 4
    assert checkpoint["grpo_sft_weights"] and all(k.startswith("latent.") for k in checkpoint["grpo_sft_weights"])
    assert math.isfinite(checkpoint["sft_valid_score"])
    best2 = last2[: -len("-last.pth")] + ".pth"
    assert os.path.basename(best2) == checkpoint["best_model_file"] and os.path.isfile(best2)
    assert {path: open(path, "rb").read() for path in first_files} == first_files
    # each run: one best model and one last checkpoint, named alike
    assert sorted(glob.glob(str(chain / "*.pth"))) == sorted([best, last, best2, last2])

    # 3. resumed in this process: GRPO epoch 5, then the test on the best model across both interruptions
    resumed = run_recbole_flr("FLR", "tiny", config_dict={**_flr_config(tiny_config_dict, chain), "resume_from": last2})
    assert resumed["saved_model_file"] not in (best, best2) and os.path.dirname(resumed["saved_model_file"]) == str(
        chain
    )
    # tolerance: none. Same weights, optimizer, counters and random states give the same floats on CPU.
    assert resumed["best_valid_score"] == straight["best_valid_score"]
    assert dict(resumed["best_valid_result"]) == dict(straight["best_valid_result"])
    assert dict(resumed["test_result"]) == dict(straight["test_result"])
    assert _same_weights(resumed["saved_model_file"], straight["saved_model_file"])
    last3 = last_checkpoint_file(resumed["saved_model_file"])
    assert torch.load(last3, weights_only=True)["fit_finished"]

    # 4. resuming a finished run trains nothing, leaves the files it resumed from alone, reports the same test result
    # and writes the files its log announces
    before = {path: open(path, "rb").read() for path in (resumed["saved_model_file"], last3)}
    again_config = {**_flr_config(tiny_config_dict, chain), "resume_from": last3, "state": "INFO"}  # a full log
    again = run_recbole_flr("FLR", "tiny", config_dict=again_config)
    assert {path: open(path, "rb").read() for path in before} == before
    assert dict(again["test_result"]) == dict(straight["test_result"])
    assert again["best_valid_score"] == straight["best_valid_score"]
    _announced_files_exist(again)


def _announced_files_exist(result):
    r"""The files the run's log names in its "Checkpoints:" line are the ones it returns, and they exist."""
    log = open(result["log_file"]).read()
    announced = re.search(r"best model goes to (\S+); the state after every epoch to (\S+) \(", log).groups()
    assert announced == (result["saved_model_file"], last_checkpoint_file(result["saved_model_file"]))
    assert all(os.path.isfile(path) for path in announced)


class _Interrupt(Exception):
    pass


def test_flr_interrupted_between_sft_and_grpo_starts_grpo_from_the_best_sft_model(tiny_config_dict, tmp_path):
    config = {**_flr_config(tiny_config_dict, tmp_path / "saved"), "grpo_epochs": 1}
    straight = run_recbole_flr("FLR", "tiny", config_dict=config)

    def interrupt(event, info):
        if event == "stage" and info["stage"] == "grpo":  # set up, before its first epoch
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_recbole_flr("FLR", "tiny", config_dict=config, callbacks=[interrupt])
    last = max(glob.glob(str(tmp_path / "saved" / "*-last.pth")), key=os.path.getmtime)
    checkpoint = torch.load(last, weights_only=True)
    assert (checkpoint["stage"], checkpoint["epoch"], checkpoint["fit_finished"]) == ("sft", 3, True)
    resumed = run_recbole_flr("FLR", "tiny", config_dict={**config, "resume_from": last})
    assert resumed["best_valid_score"] == straight["best_valid_score"]
    assert dict(resumed["test_result"]) == dict(straight["test_result"])
    assert _same_weights(resumed["saved_model_file"], straight["saved_model_file"])


def test_recbole_model_resumes_exactly_and_refuses_another_model(tiny_config_dict, tmp_path, monkeypatch):
    config = {**tiny_config_dict, "epochs": 3, "load_col": {"inter": ["user_id", "item_id", "timestamp"]}}
    straight = run_recbole_flr("SASRec", "tiny", config_dict=config)
    real = SafeCheckpointMixin._check_nan

    def check_nan(self, loss):
        real(self, loss)
        if self._loss_position == [2, 1]:
            raise _Interrupt

    with monkeypatch.context() as patch:
        patch.setattr(SafeCheckpointMixin, "_check_nan", check_nan)
        with pytest.raises(_Interrupt):
            run_recbole_flr("SASRec", "tiny", config_dict=config)
    last = max(glob.glob(os.path.join(config["checkpoint_dir"], "*-last.pth")), key=os.path.getmtime)
    checkpoint = torch.load(last, weights_only=True)
    assert (checkpoint["epoch"], checkpoint["fit_finished"], checkpoint.get("stage")) == (1, False, None)
    assert "resume_from" not in checkpoint["config"]

    before = {path: open(path, "rb").read() for path in (last, last.replace("-last.pth", ".pth"))}
    resumed = run_recbole_flr("SASRec", "tiny", config_dict={**config, "resume_from": last, "state": "INFO"})
    assert resumed["saved_model_file"] != last.replace("-last.pth", ".pth")
    assert {path: open(path, "rb").read() for path in before} == before
    _announced_files_exist(resumed)
    assert resumed["best_valid_score"] == straight["best_valid_score"]
    assert dict(resumed["test_result"]) == dict(straight["test_result"])
    with pytest.raises(CheckpointError, match="belongs to model 'SASRec'"):
        run_recbole_flr("FLR", "tiny", config_dict={**tiny_config_dict, "resume_from": last})


def _build(model_name, config_dict):
    config, model, _, train_data, valid_data, _ = prepare(model_name, "tiny", config_dict=config_dict)
    return config, model, train_data, valid_data


@pytest.mark.parametrize("model_name, bad, stage", [("FLR", math.nan, "sft"), ("SASRec", math.inf, "train")])
def test_non_finite_loss_names_stage_epoch_batch_and_keeps_the_good_checkpoints(
    tiny_config_dict, model_name, bad, stage
):
    config_dict = {**tiny_config_dict, "epochs": 3, "train_stages": ["sft"]}
    if model_name == "SASRec":
        config_dict["load_col"] = {"inter": ["user_id", "item_id", "timestamp"]}
    config, model, train_data, valid_data = _build(model_name, config_dict)
    trainer_class = FLRTrainer if model_name == "FLR" else type("T", (SafeCheckpointMixin, _recbole_trainer()), {})
    trainer = trainer_class(config, model)
    batches = len(train_data)
    assert batches >= 3
    real, calls = model.calculate_loss, []

    def calculate_loss(interaction):
        losses = real(interaction)
        calls.append(1)
        if len(calls) == batches + 3:  # epoch 1, batch 2
            return (losses[0] * bad,) + tuple(losses[1:]) if isinstance(losses, tuple) else losses * bad
        return losses

    model.calculate_loss = calculate_loss
    with pytest.raises(
        NonFiniteLossError,
        match=rf"loss is {'nan' if math.isnan(bad) else 'inf'} in stage {stage}, " r"epoch 1, batch 2",
    ) as error:
        trainer.fit(train_data, valid_data, saved=True)
    assert isinstance(error.value, ValueError) and trainer.last_model_file in str(error.value)
    best = torch.load(trainer.saved_model_file, weights_only=True)
    last = torch.load(trainer.last_model_file, weights_only=True)
    assert best["epoch"] == last["epoch"] == 0 and not last["fit_finished"]
    assert all(torch.equal(best["state_dict"][k], last["state_dict"][k]) for k in best["state_dict"])
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def _recbole_trainer():
    from recbole.trainer import Trainer

    return Trainer


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    generator = torch.Generator().manual_seed(3)
    torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=generator)
    path = str(tmp_path / "rng.pth")
    torch.save(get_rng_state(generator), path)
    draws = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], torch.rand(4, generator=generator))
    torch.manual_seed(0), np.random.seed(0), random.seed(0), generator.manual_seed(0)
    set_rng_state(torch.load(path, weights_only=True), generator)
    again = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], torch.rand(4, generator=generator))
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]
    assert torch.equal(draws[3], again[3])
    assert last_checkpoint_file("saved/FLR-tiny-x.pth") == "saved/FLR-tiny-x-last.pth"


def test_train_state_round_trips_through_a_last_checkpoint_and_refuses_a_grpo_one_without_its_state():
    from recbole_flr.trainer.train_state import TrainState

    state = TrainState(
        epoch=4,
        stage="grpo",
        stage_start_epoch=4,
        cur_step=1,
        best_valid_score=0.5,
        best_valid_result={"ndcg@10": 0.5},
        sft_valid_score=0.4,
        sft_valid_result={"ndcg@10": 0.4},
        grpo_best_epoch=None,
        grpo_sft_weights={"latent.w": torch.ones(2)},
    )
    checkpoint = {**state.to_checkpoint(resume=True, finished=True, rng={"torch": None}), "last": True}
    restored = TrainState.from_checkpoint(checkpoint, "x-last.pth")
    assert restored == TrainState(**{**vars(state), "finished": True, "rng": {"torch": None}})
    best = TrainState.from_checkpoint(state.to_checkpoint(epoch=2), "x.pth")  # a best model: its counters only
    assert (best.epoch, best.cur_step, best.best_valid_score, best.stage, best.rng) == (2, 1, 0.5, None, None)
    del checkpoint["grpo_sft_weights"]
    with pytest.raises(CheckpointError, match="grpo_sft_weights"):
        TrainState.from_checkpoint(checkpoint, "x-last.pth")
