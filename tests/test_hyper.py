"""run_hyper.py and recbole_flr.hyper: the params file is checked before training, the objective function trains and
tests one setting, every trial reaches the result file at once and is read back on a restart, and the result file is
a config file of the best setting."""

import json
import math
import os
import subprocess
import sys

import pytest
import yaml
from conftest import TINY_CLI_FLAGS, tiny_settings, write_tiny_dataset

from recbole_flr.config import Config
from recbole_flr.errors import NonFiniteLossError, UserInputError
from recbole_flr.hyper import HyperTuning, check_params, objective_function, read_params_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def params_file(tmp_path, text):
    path = tmp_path / "space.hyper"
    path.write_text(text)
    return str(path)


def test_a_params_file_is_read_as_recbole_writes_it(tmp_path):
    path = params_file(
        tmp_path,
        "# a comment\nlearning_rate choice [0.001, 0.003]\n\nhidden_dropout_prob uniform 0.1,0.5  # why\n"
        "n_layers quniform 1,3,1\nweight_decay loguniform -8,-2\nlabels choice ['a b', 'c']\n",
    )
    params = read_params_file(path)
    assert [(p.name, p.kind, p.values) for p in params] == [
        ("learning_rate", "choice", [0.001, 0.003]),
        ("hidden_dropout_prob", "uniform", [0.1, 0.5]),
        ("n_layers", "quniform", [1.0, 3.0, 1.0]),
        ("weight_decay", "loguniform", [-8.0, -2.0]),
        ("labels", "choice", ["a b", "c"]),
    ]
    assert params[2].candidates() == [1, 3] and all(isinstance(v, int) for v in params[2].candidates())
    assert params[3].candidates() == pytest.approx([math.exp(-8), math.exp(-2)])


@pytest.mark.parametrize(
    "text, says",
    [
        ("learning_rate\n", "a line is '<key> <type> <values>'"),
        ("learning_rate choose [0.1]\n", "unknown type 'choose'"),
        ("learning_rate choice 0.1\n", "non-empty Python list"),
        ("learning_rate choice []\n", "non-empty Python list"),
        ("learning_rate choice [0.1, 0.1]\n", "0.1 is listed twice"),
        ("hidden_dropout_prob uniform 0.5,0.1\n", "low end 0.5 must be below the high end 0.1"),
        ("hidden_dropout_prob uniform 0.1\n", "'uniform' takes 2 numbers"),
        ("n_layers quniform 1,3,0\n", "step q must be positive"),
        ("model choice ['SASRec']\n", "'model' says which run this is"),
    ],
)
def test_a_bad_params_line_is_named(tmp_path, text, says):
    path = params_file(tmp_path, "# first line\n" + text)
    with pytest.raises(UserInputError, match="line 2") as error:
        read_params_file(path)
    assert says in str(error.value)


def test_a_key_searched_twice_an_empty_file_and_a_missing_file_are_named(tmp_path):
    with pytest.raises(UserInputError, match="line 2.*already searched on line 1"):
        read_params_file(params_file(tmp_path, "learning_rate choice [0.1]\nlearning_rate choice [0.2]\n"))
    with pytest.raises(UserInputError, match="names no key"):
        read_params_file(params_file(tmp_path, "# nothing\n"))
    with pytest.raises(UserInputError, match="does not exist.*FLR.hyper"):
        read_params_file(str(tmp_path / "missing.hyper"))


@pytest.mark.parametrize(
    "model, text, says",
    [
        ("SASRec", "n_layer choice [1, 2]\n", "Unknown setting 'n_layer'.*Did you mean 'n_layers'"),
        ("FLR", "n_factors choice [2, 0]\n", "n_factors=0 is not a valid setting.*out of its range"),
        ("FLR", "learning_rate uniform -0.1,0.1\n", "learning_rate=-0.1 is not a valid setting"),
        ("SASRec", "n_factors choice [2, 3]\n", "'n_factors' .* is a setting of FLR.*not of SASRec"),
    ],
)
def test_every_value_of_a_params_file_is_checked_before_training(tiny_dataset_dir, tmp_path, model, text, says):
    params = read_params_file(params_file(tmp_path, text))
    with pytest.raises(UserInputError, match=f"line 1.*{says}"):
        check_params(params, model, "tiny", None, {})


def test_a_key_also_fixed_on_the_command_line_is_refused(tiny_dataset_dir, tmp_path):
    params = read_params_file(params_file(tmp_path, "learning_rate choice [0.001]\n"))
    with pytest.raises(UserInputError, match="line 1.*also set on the command line"):
        check_params(params, "SASRec", "tiny", None, {"learning_rate": "0.01"})


def test_the_objective_function_trains_validates_and_tests_one_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = tiny_settings(str(tmp_path), model="SASRec", epochs=2, learning_rate=0.003)
    result = objective_function(settings, None)
    assert result["model"] == "SASRec" and result["valid_score_bigger"] is True
    assert result["epochs"] == 2 and result["best_epoch"] in (1, 2)
    assert result["best_epoch"] == json.load(open(result["result_file"]))["best_epoch"] + 1  # the log counts from 0
    assert json.load(open(result["result_file"]))["test_result"] == pytest.approx(result["test_result"])
    assert os.path.isfile(result["log_file"])
    assert result["best_valid_score"] == pytest.approx(result["best_valid_result"]["ndcg@10"])
    assert all(math.isfinite(v) for v in result["test_result"].values()) and "mrr@10" in result["test_result"]
    assert result["seconds"] > 0 and result["train_s_per_epoch"] > 0
    assert os.path.isfile(result["saved_model_file"])


def search(**overrides):
    return dict(
        {
            "model": "SASRec",
            "dataset": "tiny",
            "params_file": "space.hyper",
            "params": [],
            "config_files": None,
            "fixed": {},
            "algo": "exhaustive",
            "search_seed": 2020,
            "valid_metric": "NDCG@10",
        },
        **overrides,
    )


def test_every_trial_is_written_at_once_read_back_on_a_restart_and_the_file_is_the_best_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = read_params_file(params_file(tmp_path, "learning_rate choice [0.001, 0.003]\n"))
    calls = []

    def objective(config_dict, files):
        calls.append(dict(config_dict))  # each finished trial is in the file before the next one starts:
        assert len(json.load(open(tmp_path / "out.result.json"))["trials"]) == len(calls) - 1
        return objective_function(tiny_settings(str(tmp_path), model="SASRec", epochs=1, **config_dict), files)

    output = str(tmp_path / "out.result")
    with open(output + ".json", "w") as f:  # an empty earlier run of the same search: nothing to read back
        json.dump({"search": search(), "trials": [], "best": None}, f)
    tuning = HyperTuning(objective, params, output, search(), fixed_config_file_list=None, max_evals=5)
    tuning.run()
    assert sorted(call["learning_rate"] for call in calls) == [0.001, 0.003]  # the grid, each point once
    written = json.load(open(output + ".json"))
    assert [trial["params"] for trial in written["trials"]] == [{"learning_rate": c["learning_rate"]} for c in calls]
    best = max(written["trials"], key=lambda trial: trial["best_valid_score"])
    assert written["best"]["params"] == best["params"] == yaml.safe_load(open(output))  # the YAML is the best
    assert (
        Config(model="SASRec", dataset="tiny", config_file_list=[output], config_dict=tiny_settings(str(tmp_path)))[
            "learning_rate"
        ]
        == best["params"]["learning_rate"]
    )

    again = HyperTuning(objective, params, output, search(), fixed_config_file_list=None, max_evals=5)
    again.run()
    assert len(calls) == 2  # both trials read back, none trained again
    assert again.best_record()["params"] == best["params"]

    with pytest.raises(UserInputError, match="another search.*search_seed"):
        HyperTuning(objective, params, output, search(search_seed=1), fixed_config_file_list=None, max_evals=5)
    with open(output + ".json", "w") as f:
        f.write("{not json")
    with pytest.raises(UserInputError, match="is not a run_hyper result file.*not overwritten"):
        HyperTuning(objective, params, output, search(), fixed_config_file_list=None, max_evals=5)


def fake_objective(failing=()):
    def objective(config_dict, files):
        if config_dict["learning_rate"] in failing:
            raise NonFiniteLossError("loss is nan in epoch 0, batch 0")
        score = {0.001: 0.1, 0.002: 0.3, 0.003: 0.2, 0.004: 0.05}[config_dict["learning_rate"]]
        return {
            "model": "SASRec",
            "best_valid_score": score,
            "valid_score_bigger": True,
            "best_valid_result": {"ndcg@10": score},
            "test_result": {"ndcg@10": score / 2},
            "seconds": 1.0,
            "epochs": 3,
            "best_epoch": 2,
            "train_s_per_epoch": 0.1,
            "saved_model_file": "x.pth",
        }

    return objective


def test_exhaustive_tries_distinct_grid_points_in_a_seeded_order_and_a_nan_trial_does_not_end_the_search(tmp_path):
    params = read_params_file(params_file(tmp_path, "learning_rate choice [0.001, 0.002, 0.003, 0.004]\n"))
    orders = []
    for name in ("a", "b"):
        tuning = HyperTuning(fake_objective(failing=(0.004,)), params, str(tmp_path / name), search(), max_evals=None)
        tuning.run()
        orders.append(
            [trial["params"]["learning_rate"] for trial in json.load(open(tmp_path / f"{name}.json"))["trials"]]
        )
    assert orders[0] == orders[1] and sorted(orders[0]) == [0.001, 0.002, 0.003, 0.004]
    trials = json.load(open(tmp_path / "a.json"))["trials"]
    assert [t for t in trials if t.get("failed")][0]["params"] == {"learning_rate": 0.004}
    assert json.load(open(tmp_path / "a.json"))["best"]["params"] == {"learning_rate": 0.002}

    capped = HyperTuning(fake_objective(), params, str(tmp_path / "c"), search(), max_evals=2)
    capped.run()
    assert len(json.load(open(tmp_path / "c.json"))["trials"]) == 2


def test_exhaustive_refuses_a_range(tmp_path):
    params = read_params_file(
        params_file(tmp_path, "learning_rate choice [0.1]\nhidden_dropout_prob uniform 0.1,0.5\n")
    )
    with pytest.raises(UserInputError, match="line 2.*needs 'choice' lines"):
        HyperTuning(fake_objective(), params, str(tmp_path / "out"), search(), max_evals=2)


def run_hyper(tmp_path, *args):
    data = tmp_path / "data"
    write_tiny_dataset(str(data))
    command = [sys.executable, os.path.join(ROOT, "run_hyper.py"), "--dataset=tiny", f"--data_path={data}"]
    return subprocess.run(
        command + TINY_CLI_FLAGS + list(args), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


def test_run_hyper_stops_on_a_bad_params_file_before_training(tmp_path):
    path = params_file(tmp_path, "learning_rate choice [0.001]\nn_factor choice [2, 3]\n")
    done = run_hyper(tmp_path, "--model=FLR", f"--params_file={path}")
    assert done.returncode == 1
    assert f"{path}, line 2" in done.stderr and "Did you mean 'n_factors'" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "saved").exists()  # nothing trained


def test_run_hyper_tunes_with_the_shipped_params_file_and_prints_the_best(tmp_path):
    done = run_hyper(tmp_path, "--model=FLR", "--max_evals=2")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert sum(line.startswith("trial ") for line in lines) == 2  # one progress line per trial
    assert any(line.startswith("best settings (valid MRR@10") for line in lines)
    best = yaml.safe_load(open(tmp_path / "hyper" / "FLR-tiny.result"))
    assert set(best) == {"learning_rate"} and best["learning_rate"] in (0.001, 0.003)
