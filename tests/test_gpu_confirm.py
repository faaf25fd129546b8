import io
import json
import os

import pytest
from conftest import benchmark_script

gpu_confirm = benchmark_script("research/gpu_confirm")
compare = benchmark_script("compare")
common = benchmark_script("common")


def label(run):
    _, _, variant, _, suffix, _ = run
    return variant + suffix


def test_tuned_plan_restricts_flr_to_ml1m_and_runs_the_tuned_baseline_on_both():
    runs = gpu_confirm.plan_runs("tuned", ["ml-1m", "amazon-games"], [1, 2])
    assert {(run[0], run[1], label(run)) for run in runs} == {
        ("ml-1m", "FLR", "default"),
        ("ml-1m", "FLR", "backbone"),
        ("ml-1m", "SASRecAllPos", "default-tuned"),
        ("amazon-games", "SASRecAllPos", "default-tuned"),
    }
    assert len(runs) == 4 * 2  # every seed of each
    tuned = [run[3] for run in runs if label(run) == "default-tuned"]
    assert len(tuned) == 4 and all(extra == gpu_confirm.TUNED for extra in tuned)


def test_defaults_plan_keeps_priority_order_and_text_runs_on_text_datasets_only():
    runs = gpu_confirm.plan_runs("defaults", ["amazon-games", "ml-1m"], [7], text_datasets=["amazon-games"])
    labels = [(run[0], label(run)) for run in runs]
    # the first group (every model at its defaults) on both datasets comes before any title-feature run
    first_text = min(i for i, (_, name) in enumerate(labels) if "llmtext" in name)
    assert {name for _, name in labels[:first_text]} == {"default", "allpos+backbone"}
    assert len(labels[:first_text]) == 6
    assert all(d == "amazon-games" for d, name in labels if "llmtext" in name)
    assert ("amazon-games", "default+llmtext") in labels and labels[-1] == ("ml-1m", "allpos+notext")


def test_text_plan_reads_the_feature_cache_for_the_llmtext_rows_only():
    runs = gpu_confirm.plan_runs("text", ["ml-1m"], [1, 2, 3])
    assert len(runs) == 9
    for run in runs:
        assert run[3] == (gpu_confirm.TEXT if label(run).endswith("llmtext") else {})
    assert sorted({label(run) for run in runs}) == ["default+llmtext", "notext"]


def test_length_plan_runs_both_arms_at_200_before_50_on_ml1m_only():
    runs = gpu_confirm.plan_runs("length", ["ml-1m", "amazon-games"], [1, 2, 3])
    assert len(runs) == 12 and {run[0] for run in runs} == {"ml-1m"}
    labels = [label(run) for run in runs]
    assert all(x.endswith("@len200") for x in labels[:6]) and all(x.endswith("@len50") for x in labels[6:])
    for run in runs:
        assert run[3] == (gpu_confirm.LONG if label(run).endswith("@len200") else {})


def test_every_plan_row_is_one_compare_py_accepts():
    r"""compare.py runs a model other than FLR as variant ``default`` only, and refuses a config key of another model's:
    a plan row that breaks either would fail on the device."""
    from recbole_flr.config import foreign_keys

    for name, groups in gpu_confirm.PLANS.items():
        for model, variant, extra, suffix, _ in (row for group in groups for row in group):
            assert suffix == "" or suffix[0] in "+-@", (name, suffix)  # read apart from the variant
            assert model == "FLR" or variant == "default", (name, model, variant)
            assert all(part in common.VARIANTS for part in variant.split("+")), (name, variant)
            assert not foreign_keys(model, extra), (name, model, extra)


def test_settings_pairs_read_back_as_the_same_settings():
    settings = {**gpu_confirm.TUNED, **gpu_confirm.TEXT, "lr": 1e-05, "none": None, "stages": ["sft"], "s": "1e-05"}
    pairs = common.settings_pairs(settings)
    assert pairs[0] == "learning_rate=0.001"
    assert common.read_settings(pairs, "--config") == settings


@pytest.fixture
def fake_compare(tmp_path, monkeypatch):
    r"""compare.py replaced: each run takes 250 s of a fake clock, appends a row to the results file of its dataset and
    tag (under ``tmp_path/results``) and prints compare.py's lines; a run of ``backbone`` prints compare.py's failure
    line. Yields the commands, in the order the runs started."""
    now, commands = [0.0], []
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(gpu_confirm, "RESULTS", str(results))
    monkeypatch.setattr(gpu_confirm, "clock", lambda: now[0])

    class Popen:
        def __init__(self, command, **kwargs):
            commands.append(command)
            args = compare.parse_args(command[2:])
            now[0] += 250
            path = results / f"compare-{args.datasets[0]}{args.results_tag}.json"
            runs = json.loads(path.read_text())["runs"] if path.exists() else []
            path.write_text(json.dumps({"runs": runs + [{"variant": args.variants[0] + args.label_suffix}]}))
            lines = [f"[compare] {args.models[0]} ...\n"]
            lines += ["[compare]   failed: boom\n"] if args.variants == ["backbone"] else ["[compare]   test ndcg@10\n"]
            self.stdout = io.StringIO("".join(lines))

        def wait(self):
            return 0

    monkeypatch.setattr(gpu_confirm.subprocess, "Popen", Popen)
    return commands


def test_runs_call_compare_py_with_the_budget_the_deadline_leaves_and_copy_the_results(tmp_path, fake_compare, capsys):
    out = tmp_path / "out"
    argv = ["--plan", "tuned", "--datasets", "ml-1m", "--seeds", "5", "6", "--jobs", "1", "--tag=-t", "--out", str(out)]
    argv += ["--deadline", "1000", "--overhead", "100", "--min_budget", "300", "--data_path", "/d"]
    argv += ["--config", "epochs=3", "learning_rate=0.01"]  # every run's; a plan row's own config comes after
    assert gpu_confirm.main(argv) == 1  # the backbone run printed compare.py's failure line
    # each run gets what the deadline leaves minus the overhead (a run takes 250 s): 900, 650, 400; then 150 s would
    # be left, under --min_budget, so the last 3 runs are skipped
    parsed = [compare.parse_args(command[2:]) for command in fake_compare]
    assert [a.time_budget for a in parsed] == [900, 650, 400]
    assert [(a.models, a.variants, a.seeds) for a in parsed] == [
        (["FLR"], ["default"], [5]),
        (["FLR"], ["default"], [6]),
        (["FLR"], ["backbone"], [5]),
    ]
    printed = capsys.readouterr().out
    assert (
        printed.count("[confirm] skipped") == 3 and "skipped SASRecAllPos default-tuned ml-1m 6: 150 s left" in printed
    )
    assert "3 runs in 750 s, 1 failed" in printed and "[compare]   failed: boom" in printed
    for command, a in zip(fake_compare, parsed):
        assert command[1] == os.path.join(gpu_confirm.ROOT, "benchmarks", "compare.py")
        assert a.datasets == ["ml-1m"] and a.results_tag == "-t" and a.append and a.threads == 1
        assert a.data_path == "/d" and a.config == {"epochs": 3, "learning_rate": 0.01} and a.label_suffix == ""
    assert len({a.scratch for a in parsed}) == 3  # a scratch folder of its own per run
    # --out: the dataset's results file as the last run left it, no .part
    assert sorted(os.listdir(out)) == ["compare-ml-1m-t.json"]
    copied = json.loads((out / "compare-ml-1m-t.json").read_text())
    assert [row["variant"] for row in copied["runs"]] == ["default", "default", "backbone"]


def test_a_plan_rows_config_and_label_suffix_reach_compare_py(fake_compare):
    argv = ["--plan", "tuned", "--datasets", "amazon-games", "--seeds", "1", "--tag=-x", "--deadline", "600"]
    argv += ["--config", "learning_rate=0.5", "epochs=2"]
    assert gpu_confirm.main(argv) == 0
    (command,) = fake_compare  # amazon-games: only the tuned baseline
    a = compare.parse_args(command[2:])
    assert a.models == ["SASRecAllPos"] and a.variants[0] + a.label_suffix == "default-tuned"
    assert a.config == {**gpu_confirm.TUNED, "epochs": 2}  # the row's learning rate wins over --config's
    assert a.time_budget == 600 - 90 and a.results_tag == "-x" and a.data_path == "../shared/datasets"


def test_dry_run_prints_each_command_and_runs_nothing(fake_compare, capsys):
    assert gpu_confirm.main(["--plan", "length", "--datasets", "ml-1m", "--seeds", "1", "--tag=-y", "--dry_run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert not fake_compare and len(lines) == 4
    assert "--variants allpos+latentstate" in lines[0] and "--label_suffix=@len200" in lines[0]
    assert "--config MAX_ITEM_LIST_LENGTH=200" in lines[0] and "--time_budget 450" in lines[0]
    assert "--label_suffix=@len50" in lines[3] and "--config" not in lines[3]


def test_a_config_key_that_a_planned_model_does_not_read_is_refused_before_any_run(fake_compare):
    argv = ["--plan", "tuned", "--datasets", "ml-1m", "--seeds", "1", "--tag=-z", "--config", "grpo_epochs=1"]
    with pytest.raises(SystemExit, match="grpo_epochs is a setting of FLR, not of SASRecAllPos"):
        gpu_confirm.main(argv)
    assert not fake_compare
    assert gpu_confirm.main(argv[:-2] + ["--plan", "length", "--config", "grpo_epochs=1", "--dry_run"]) == 0  # FLR only
