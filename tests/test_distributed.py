"""RecBole's distributed mode on a CPU: two processes with gloo, through the plugin's ``run``."""

import json
import socket

import pytest
import torch

from recbole_flr.quick_start import run


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.parametrize("model", ["SASRec", "FLR"])
def test_two_processes_evaluate_exactly_like_one(model, tiny_config_dict):
    # learning_rate 0: both runs test the same weights (DDP broadcasts rank 0's, seeded like the single process), so
    # any difference comes from how the two processes split and gather the evaluation
    flr = {"n_factors": 2, "train_stages": ["sft"]} if model == "FLR" else {}  # FLR's keys are refused for SASRec
    config = dict(tiny_config_dict, learning_rate=0.0, metric_decimal_place=8, **flr)
    single = run(model, "tiny", config_dict=dict(config))
    double = run(model, "tiny", config_dict=dict(config), nproc=2, port=free_port())
    assert double is not None, "rank 0 returned no result"
    for metric, value in single["test_result"].items():
        assert double["test_result"][metric] == pytest.approx(float(value), abs=1e-6), metric
    checkpoint = torch.load(double["saved_model_file"], weights_only=True)
    assert checkpoint["config"]["model"] == model
    # the same plain floats as one process's, and one result file, written by rank 0
    assert all(type(double[key]) is dict for key in ("best_valid_result", "test_result"))
    assert all(type(value) is float for value in double["test_result"].values())
    with open(double["result_file"]) as f:
        assert json.load(f)["test_result"] == double["test_result"]


def test_more_processes_than_devices_is_a_clear_error(tiny_config_dict):
    with pytest.raises(ValueError, match=r"--nproc=4096 is not in \[1, "):
        run("SASRec", "tiny", config_dict=tiny_config_dict, nproc=4096)
