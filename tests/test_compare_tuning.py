"""benchmarks/compare.py's tuning: the trials are run_hyper's params file in run_hyper's exhaustive order, the best
trial's config reruns on the other seeds, and the defaults win when they validate at least as well."""

import itertools
import json
import threading

import pytest
from conftest import benchmark_script

from recbole_flr.hyper import SEARCH_SEED, HyperTuning, read_params_file, shipped_params_file

GRID = "learning_rate choice [0.001, 0.002, 0.003]\nn_layers choice [1, 2]\n"


@pytest.fixture(scope="module")
def compare():
    return benchmark_script("compare")


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.hyper"
    path.write_text(GRID)
    return str(path)


def run_hyper_order(params_path, folder):
    r"""The settings ``run_hyper.py --algo=exhaustive`` (its HyperTuning, default seed) tries, in its order."""
    tried = []

    def objective(config_dict, files):
        tried.append(dict(config_dict))
        result = {"ndcg@10": 0.1}
        record = dict(model="SASRec", best_valid_score=0.1, valid_score_bigger=True, best_valid_result=result)
        record.update(test_result=result, seconds=1.0, epochs=1, best_epoch=1, train_s_per_epoch=1.0)
        return dict(record, saved_model_file="x.pth")

    search = {"model": "SASRec", "dataset": "tiny", "algo": "exhaustive", "search_seed": SEARCH_SEED}
    search.update(params_file=params_path, params=[], config_files=None, fixed={}, valid_metric="NDCG@10")
    output = str(folder / "order.result")
    HyperTuning(objective, read_params_file(params_path), output, search, max_evals=None, early_stop=100).run()
    return tried


def test_the_trials_are_the_params_file_grid_in_run_hyper_order(compare, space, tmp_path):
    order = run_hyper_order(space, tmp_path)
    grid = [{"learning_rate": lr, "n_layers": n} for lr, n in itertools.product([0.001, 0.002, 0.003], [1, 2])]
    assert sorted(map(json.dumps, order)) == sorted(map(json.dumps, grid))  # every point once...
    assert order != grid  # ...in a seeded shuffled order, not the file's
    args = compare.parse_args(["--models", "SASRec", "--trials", "4", "--params_file", space])
    path, settings = compare.trials(args, "SASRec")
    assert path == space and settings == order[:4]  # the first N of run_hyper's order
    args = compare.parse_args(["--models", "SASRec", "--trials", "50", "--params_file", space])
    assert compare.trials(args, "SASRec")[1] == order  # at most the whole grid


def test_without_a_params_file_each_model_reads_its_shipped_one(compare):
    args = compare.parse_args(["--models", "FLR", "GRU4Rec", "--trials", "9"])
    for model in ("FLR", "GRU4Rec"):
        path, settings = compare.trials(args, model)
        assert path == shipped_params_file(model)
        values = {param.name: param.values for param in read_params_file(path)}
        size = 1
        for options in values.values():
            size *= len(options)
        assert len(settings) == min(9, size) and all(setting.keys() == values.keys() for setting in settings)
        assert all(setting[key] in values[key] for setting in settings for key in setting)


def test_a_params_file_is_one_models_and_a_range_is_refused(compare, tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(["--models", "SASRec", "GRU4Rec", "--trials", "2", "--params_file", "x.hyper"])
    assert "--params_file is one model's search space" in capsys.readouterr().err
    ranged = tmp_path / "ranged.hyper"
    ranged.write_text("learning_rate choice [0.001]\nhidden_dropout_prob uniform 0.1,0.5\n")
    args = compare.parse_args(["--models", "SASRec", "--trials", "2", "--params_file", str(ranged)])
    with pytest.raises(SystemExit, match="line 2.*give 'choice' lines"):
        compare.trials(args, "SASRec")


def _row(model, seed, label, extra, score=None):
    r"""A fake run's row whose valid score is its learning rate (times its layers): the largest "wins"."""
    score = extra["learning_rate"] * extra.get("n_layers", 1) if score is None else score
    return {"model": model, "seed": seed, "variant": label, "config": dict(extra), "best_valid_score": score}


def test_the_best_trial_reruns_on_the_other_seeds(compare, space, monkeypatch):
    calls = []

    def fake_run_one(args, model, dataset, seed, variant="default", extra=None, label=None):
        calls.append((seed, variant, dict(extra), label))
        return _row(model, seed, label, extra)

    monkeypatch.setattr(compare, "run_one", fake_run_one)
    argv = ["--models", "FLR", "--variants", "allpos", "--seeds", "1", "2", "3", "--trials", "4", "--params_file"]
    args = compare.parse_args(argv + [space, "--skip_defaults"])
    rows = []
    compare.tune(args, "FLR", "ml-100k", "allpos", rows.append)

    settings = compare.trials(args, "FLR")[1]
    best = max(settings, key=lambda s: s["learning_rate"] * s["n_layers"])
    assert best != settings[0]  # the order of the trials matters to what follows
    assert calls[:4] == [(1, "allpos", setting, f"allpos-trial{i}") for i, setting in enumerate(settings)]
    assert calls[4:] == [(2, "allpos", best, "allpos-tuned"), (3, "allpos", best, "allpos-tuned")]
    tuned = [r for r in rows if r["variant"] == "allpos-tuned"]
    assert [r["seed"] for r in tuned] == [1, 2, 3] and all(r["config"] == best for r in tuned)
    assert tuned[0]["reused_from"] == f"allpos-trial{settings.index(best)}"  # seed 1: the trial itself, not rerun


@pytest.mark.parametrize("margin, defaults_win", [(0.0, True), (1e-6, True), (-1e-6, False)])
def test_the_defaults_win_when_they_validate_at_least_as_well(compare, space, monkeypatch, margin, defaults_win):
    r"""With --skip_defaults, the defaults' earlier runs (in the JSON) compete: if their first seed validates at least
    as well as the best trial (a tie included), ``tuned`` is the defaults (reused, a missing seed run with no extra
    config); a shade worse, and the best trial is ``tuned``."""
    calls = []

    def fake_run_one(args, model, dataset, seed, variant="default", extra=None, label=None):
        calls.append((seed, dict(extra), label))
        return _row(model, seed, label, extra, score=None if extra else 0.0)

    monkeypatch.setattr(compare, "run_one", fake_run_one)
    args = compare.parse_args(["--models", "SASRec", "--seeds", "1", "2", "3", "--trials", "6", "--params_file", space])
    best_score = 0.003 * 2  # the grid's best trial
    earlier = [dict(_row("SASRec", seed, "default", {}, score=best_score + margin), time_budget=0) for seed in (1, 2)]
    earlier.append(dict(earlier[0], model="BERT4Rec", best_valid_score=9.0))  # another model's: never a candidate
    earlier.append(dict(earlier[0], variant="default@600s", best_valid_score=9.0))  # another label: neither
    earlier.append(dict(earlier[0], seed=3, error="boom"))  # a failed default run: seed 3 is trained, not reused
    rows = []
    compare.tune(args, "SASRec", "ml-100k", "default", rows.append, earlier)
    tuned = [r for r in rows if r["variant"] == "tuned"]
    assert [r["seed"] for r in tuned] == [1, 2, 3]
    if defaults_win:
        assert [r.get("reused_from") for r in tuned] == ["default", "default", None]
        assert calls[6:] == [(3, {}, "tuned")]  # only the seed without a default run is trained, with no extra config
        assert tuned[0]["best_valid_score"] == best_score + margin
    else:
        best = {"learning_rate": 0.003, "n_layers": 2}
        assert all(r["config"] == best for r in tuned) and tuned[0]["reused_from"].startswith("trial")
        assert calls[6:] == [(2, best, "tuned"), (3, best, "tuned")]


def test_a_baseline_tunes_its_default_variant_and_failed_trials_make_no_tuned_row(compare, space, monkeypatch):
    calls = []
    monkeypatch.setattr(
        compare,
        "run_one",
        lambda args, model, dataset, seed, variant, extra, label: calls.append((variant, label))
        or {"error": "boom", "variant": label},
    )
    args = compare.parse_args(["--models", "SASRec", "--trials", "2", "--params_file", space])
    rows = []
    compare.tune(args, "SASRec", "ml-100k", "default", rows.append)
    assert calls == [("default", "trial0"), ("default", "trial1")]
    assert len(rows) == 2  # every trial failed: no tuned row


def test_jobs_run_the_trials_side_by_side_and_keep_their_order(compare, space, monkeypatch):
    barrier = threading.Barrier(4, timeout=10)  # breaks unless the 4 trials are running at the same time

    def fake_run_one(args, model, dataset, seed, variant="default", extra=None, label=None):
        if label.startswith("trial"):
            barrier.wait()
        return _row(model, seed, label, extra)

    monkeypatch.setattr(compare, "run_one", fake_run_one)
    argv = ["--models", "SASRec", "--seeds", "1", "2", "--trials", "4", "--jobs", "4", "--params_file", space]
    args = compare.parse_args(argv)
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
    assert flr["sft_test_result"] and "ndcg@10" in flr["sft_valid_result"]  # the SFT checkpoint GRPO starts from

    sasrec = runs["SASRec"]
    assert not sasrec["cut"] and [e["epoch"] for e in sasrec["epochs"]] == [0, 1]
    assert all(e["batches"] == e["n_batches"] and e["stage"] is None for e in sasrec["epochs"])
    assert len(sasrec["valid"]) == 2 and sasrec["test"]["users"] == 40


def test_a_config_key_of_another_model_is_refused_before_any_run(compare, capsys):
    r"""``--config n_factors=2`` is FLR's: SASRec would refuse it run by run, so the call stops at once, naming both."""
    assert compare.parse_args(["--models", "FLR", "SASRec", "--config", "n_layers=3"]).config == {"n_layers": 3}
    with pytest.raises(SystemExit):
        compare.parse_args(["--models", "FLR", "SASRec", "--config", "n_factors=2"])
    err = capsys.readouterr().err
    assert "--config n_factors is a setting of FLR" in err and "not of SASRec" in err
