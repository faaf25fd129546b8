"""benchmarks/compare.py's tuning: the same draws for every model, the best trial's config on every seed."""

import threading

import pytest
from conftest import benchmark_script


@pytest.fixture(scope="module")
def compare():
    return benchmark_script("compare")


def test_trials_are_distinct_grid_points_drawn_alike_every_time(compare):
    first, again = compare.draw_trials("FLR", 5), compare.draw_trials("FLR", 5)
    assert first == again
    assert len({str(sorted(t.items())) for t in first}) == 5
    for trial in first:
        for key, value in trial.items():
            if key == "inner_size":
                assert value == 4 * trial["hidden_size"]
            else:
                assert value in compare.GRIDS["FLR"][key]


def _row(model, seed, label, extra):
    r"""A fake run's row whose valid score is its learning rate: the largest learning rate "wins"."""
    return {
        "model": model,
        "seed": seed,
        "variant": label,
        "config": dict(extra),
        "best_valid_score": extra["learning_rate"],
    }


def test_tuning_reuses_the_best_trial_and_runs_its_config_on_the_other_seeds(compare, monkeypatch):
    calls = []

    def fake_run_one(args, model, dataset, seed, variant="default", extra=None, label=None):
        calls.append((seed, variant, dict(extra), label))
        return _row(model, seed, label, extra)

    monkeypatch.setattr(compare, "run_one", fake_run_one)
    args = compare.parse_args(
        ["--models", "FLR", "--variants", "allpos", "--seeds", "1", "2", "3", "--trials", "4", "--skip_defaults"]
    )
    rows = []
    compare.tune(args, "FLR", "ml-100k", "allpos", rows.append)

    trials = compare.draw_trials("FLR", 4)
    best = max(trials, key=lambda t: t["learning_rate"])  # first of the ties, as max() keeps
    assert [c[3] for c in calls[:4]] == [f"allpos-trial{i}" for i in range(4)]
    assert all(c[0] == 1 and c[1] == "allpos" for c in calls[:4])
    assert calls[4:] == [(2, "allpos", best, "allpos-tuned"), (3, "allpos", best, "allpos-tuned")]
    tuned = [r for r in rows if r["variant"] == "allpos-tuned"]
    assert [r["seed"] for r in tuned] == [1, 2, 3] and all(r["config"] == best for r in tuned)
    assert tuned[0]["reused_from"] == f"allpos-trial{trials.index(best)}"


@pytest.mark.parametrize("default_valid", [1.0, 0.0001])
def test_the_defaults_are_a_candidate_of_the_tuning(compare, monkeypatch, default_valid):
    r"""With --skip_defaults, the defaults' earlier runs (in the JSON) compete: if their first seed validates at least
    as well as the best trial, ``tuned`` is the defaults (reused, the missing seed run with no extra config)."""
    calls = []

    def fake_run_one(args, model, dataset, seed, variant="default", extra=None, label=None):
        calls.append((seed, dict(extra), label))
        return _row(model, seed, label, extra or {"learning_rate": 0.0})

    monkeypatch.setattr(compare, "run_one", fake_run_one)
    args = compare.parse_args(["--models", "SASRec", "--seeds", "1", "2", "3", "--trials", "2", "--skip_defaults"])
    earlier = [
        dict(_row("SASRec", seed, "default", {"learning_rate": default_valid}), config={}, time_budget=0)
        for seed in (1, 2)
    ]
    earlier.append(dict(earlier[0], model="BERT4Rec", best_valid_score=9.0))  # another model's: never a candidate
    rows = []
    compare.tune(args, "SASRec", "ml-100k", "default", rows.append, earlier)
    tuned = [r for r in rows if r["variant"] == "tuned"]
    assert [r["seed"] for r in tuned] == [1, 2, 3]
    if default_valid == 1.0:  # the defaults beat every trial (learning rates <= 0.005)
        assert [r.get("reused_from") for r in tuned] == ["default", "default", None]
        assert calls[2:] == [(3, {}, "tuned")]  # only the seed without a default run is trained
        assert tuned[0]["best_valid_score"] == 1.0
    else:
        best = max(compare.draw_trials("SASRec", 2), key=lambda t: t["learning_rate"])
        assert all(r["config"] == best for r in tuned) and tuned[0]["reused_from"].startswith("trial")


def test_a_baseline_tunes_its_default_variant(compare, monkeypatch):
    calls = []
    monkeypatch.setattr(
        compare,
        "run_one",
        lambda args, model, dataset, seed, variant, extra, label: calls.append((variant, label))
        or {"error": "boom", "variant": label},
    )
    args = compare.parse_args(["--models", "SASRec", "--trials", "2"])
    rows = []
    compare.tune(args, "SASRec", "ml-100k", "default", rows.append)
    assert calls == [("default", "trial0"), ("default", "trial1")]
    assert len(rows) == 2  # every trial failed: no tuned row


def test_jobs_run_the_trials_side_by_side_and_keep_their_order(compare, monkeypatch):
    barrier = threading.Barrier(4, timeout=10)  # breaks unless the 4 trials are running at the same time

    def fake_run_one(args, model, dataset, seed, variant="default", extra=None, label=None):
        if label.startswith("trial"):
            barrier.wait()
        return _row(model, seed, label, extra)

    monkeypatch.setattr(compare, "run_one", fake_run_one)
    args = compare.parse_args(["--models", "SASRec", "--seeds", "1", "2", "--trials", "4", "--jobs", "4"])
    rows = []
    compare.tune(args, "SASRec", "ml-100k", "default", rows.append)
    assert sorted(r["variant"] for r in rows[:4]) == [f"trial{i}" for i in range(4)]
    assert [r["variant"] for r in rows[4:]] == ["tuned", "tuned"] and [r["seed"] for r in rows[4:]] == [1, 2]


def test_jobs_below_one_is_refused_with_the_option(compare, capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(["--jobs", "0"])
    assert "--jobs 0: it must be at least 1" in capsys.readouterr().err


def test_a_budgeted_run_stops_after_the_batch_that_spends_the_budget(compare, tiny_dataset_dir, tmp_path):
    r"""The worker's budget (through the trainer's public time_budget and callbacks, nothing patched): the epoch that
    spends it ends after that batch and is validated, a stage that begins after it runs one batch, and training stops;
    an unbudgeted baseline runs all its epochs."""
    import json

    import recbole.trainer.trainer as recbole_trainer
    from conftest import tiny_settings
    from recbole.utils import early_stopping

    runs = {}
    for model, budget, extra in [
        (
            "FLR",
            1e-9,
            {
                "epochs": 3,
                "train_stages": ["sft", "grpo"],
                "grpo_epochs": 2,
                "grpo_num_generations": 4,
                "train_batch_size": 16,
            },
        ),
        ("SASRec", 0, {"epochs": 2}),
    ]:
        config = tiny_settings(str(tmp_path), **extra)
        for key in ("metrics", "topk"):  # the protocol's
            config.pop(key)
        spec = str(tmp_path / f"{model}.json")
        with open(spec, "w") as f:
            json.dump(
                {
                    "model": model,
                    "dataset": "tiny",
                    "threads": 1,
                    "time_budget": budget,
                    "config": config,
                    "out": spec + "-out",
                },
                f,
            )
        compare._worker(spec)
        with open(spec + "-out") as f:
            runs[model] = json.load(f)
    assert recbole_trainer.early_stopping is early_stopping  # RecBole's module is untouched

    flr = runs["FLR"]
    assert flr["cut"] and [(e["stage"], e["batches"], e["cut"]) for e in flr["epochs"]] == [
        ("sft", 1, True),
        ("grpo", 1, True),
    ]
    assert [(v["epoch"], v["stage"]) for v in flr["valid"]] == [(0, "sft"), (1, "grpo")]
    assert flr["test"]["users"] == 40 and flr["fit_s"] > 0

    sasrec = runs["SASRec"]
    assert not sasrec["cut"] and [e["epoch"] for e in sasrec["epochs"]] == [0, 1]
    assert all(e["batches"] == e["n_batches"] and e["stage"] is None for e in sasrec["epochs"])
    assert len(sasrec["valid"]) == 2 and sasrec["test"]["users"] == 40
