"""benchmarks/zoo.py runs a model's tuning and its best setting's seeds through run_hyper.py, then makes the page from
the result files (``--page``: the page alone): means and spreads over the seeds, the ranking, the models pending."""

import json
import os
import statistics
import subprocess
import sys

from conftest import benchmark_script, write_tiny_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "MAX_ITEM_LIST_LENGTH=10",
    "hidden_size=16",
    "inner_size=32",
    "n_layers=1",
    "epochs=1",
    "state=ERROR",
    "gpu_id=",
]


def test_the_zoo_tunes_a_model_then_reruns_its_best_setting_with_two_more_seeds_then_writes_the_page(tmp_path):
    write_tiny_dataset(str(tmp_path / "data"))
    command = [sys.executable, "benchmarks/zoo.py", "--dataset=tiny", f"--data_path={tmp_path / 'data'}"]
    command += ["--models", "SASRec", "--max_evals=1", "--jobs=1", f"--results={tmp_path / 'zoo'}"]
    command += [f"--docs={tmp_path / 'docs'}"]
    command += [f"--scratch={tmp_path / 'scratch'}", "--set"] + TINY
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "tiny SASRec seeds: done" in done.stdout, done.stdout + done.stderr[-2000:]
    tuning = json.load(open(tmp_path / "zoo" / "tiny" / "SASRec.result.json"))
    seeds = json.load(open(tmp_path / "zoo" / "tiny" / "SASRec-seeds.result.json"))
    assert len(tuning["trials"]) == 1 and tuning["search"]["params_file"].endswith("hyper/SASRec.hyper")
    assert sorted(trial["params"]["seed"] for trial in seeds["trials"]) == [2021, 2022]
    # the seeds ran the best setting: its result file is among their config files
    assert seeds["search"]["config_files"][-1].endswith("SASRec.result")
    page = (tmp_path / "docs" / "tiny.md").read_text()  # then the page, from those result files
    assert "| SASRec | id |" in page and "- FLR: not started" in page
    assert json.load(open(tmp_path / "zoo" / "tiny" / "dataset.json"))["users"] == 40  # the dataset's statistics
    assert "| [tiny](tiny.md) | 1 of" in (tmp_path / "docs" / "README.md").read_text()


def write_runs(folder, label, ndcgs, trials=2):
    def run(ndcg, seed):
        result = {"recall@10": 2 * ndcg, "mrr@10": ndcg / 2, "ndcg@10": ndcg, "hit@10": 2 * ndcg}
        return {
            "params": {"seed": seed},
            "params_str": f"seed:{seed}",
            "best_valid_score": ndcg,
            "valid_score_bigger": True,
            "best_valid_result": result,
            "test_result": result,
            "seconds": 10.0,
            "epochs": 12,
            "best_epoch": 2 + seed % 3,
            "train_s_per_epoch": 1.5,
        }

    search = {
        "model": label,
        "params_file": f"recbole_flr/properties/hyper/{label}.hyper",
        "params": [["learning_rate", "choice", [0.001, 0.003]]],
        "config_files": ["recbole_flr/properties/protocol.yaml"],
        "fixed": {"show_progress": "False"},
        "algo": "exhaustive",
    }
    best = dict(run(ndcgs[0], 2020), params={"learning_rate": 0.003})
    tuning = {"search": search, "trials": [best] * trials, "best": best}
    json.dump(tuning, open(os.path.join(folder, f"{label}.result.json"), "w"))
    if len(ndcgs) > 1:
        seeds = {"search": search, "trials": [run(n, 2021 + i) for i, n in enumerate(ndcgs[1:])], "best": None}
        json.dump(seeds, open(os.path.join(folder, f"{label}-seeds.result.json"), "w"))


def test_the_page_ranks_the_models_on_mean_test_ndcg_and_lists_the_pending_ones(tmp_path):
    page = benchmark_script("zoo")
    folder = tmp_path / "zoo" / "tiny"
    folder.mkdir(parents=True)
    json.dump({"users": 40, "items": 60}, open(folder / "dataset.json", "w"))
    write_runs(str(folder), "FLR", [0.10, 0.12, 0.11])
    write_runs(str(folder), "SASRec", [0.13, 0.12, 0.14])
    write_runs(str(folder), "GRU4Rec", [0.20])  # one seed so far: pending, not ranked
    page.FOLDERS.update(results=str(tmp_path / "zoo"), docs=str(tmp_path / "docs"))
    done, pending, missing = page.page("tiny", None)
    page.index()
    assert [row["label"] for row in done] == ["SASRec", "FLR"] and [row["label"] for row in pending] == ["GRU4Rec"]
    text = open(tmp_path / "docs" / "tiny.md").read()
    ratio = statistics.mean([0.10, 0.12, 0.11]) / statistics.mean([0.13, 0.12, 0.14])
    assert f"FLR ranks **2 of 2** on test NDCG@10; first is SASRec, FLR is {ratio:.3f}x its NDCG@10." in text
    assert "| SASRec | id | 0.2600 ± 0.0200 | 0.0650 ± 0.0050 | 0.1300 ± 0.0100 |" in text  # mean ± sample std
    assert "- GRU4Rec: 2 tuning trial(s), 1 of 3 seeds finished" in text and "- CORE: not started" in text
    assert "| [tiny](tiny.md) | 2 of" in open(tmp_path / "docs" / "README.md").read()
    assert "python run_hyper.py --model=FLR --dataset=tiny" in text
    assert "python benchmarks/zoo.py --page --dataset tiny     # this page" in text


def test_the_pages_link_the_readme_the_claims_and_the_research_log(tmp_path):
    folder = tmp_path / "zoo" / "tiny"
    folder.mkdir(parents=True)
    json.dump({"users": 40, "items": 60}, open(folder / "dataset.json", "w"))
    write_runs(str(folder), "FLR", [0.10, 0.12, 0.11])
    command = [sys.executable, "benchmarks/zoo.py", "--page", "--dataset=tiny", f"--results={tmp_path / 'zoo'}"]
    done = subprocess.run(command + [f"--docs={tmp_path / 'docs'}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "1 models with 3 seeds" in done.stdout, done.stdout + done.stderr[-2000:]
    assert not (tmp_path / "zoo" / "tiny" / "SASRec.result.json").exists()  # --page trains nothing
    for name in ("tiny.md", "README.md"):
        text = (tmp_path / "docs" / name).read_text()
        for link in ("(../../README.md)", "(../claims.md)", "(../research_log.md)"):
            assert link in text, f"{name} lacks the link {link}"
    for target in ("../../README.md", "../claims.md", "../research_log.md"):  # they resolve from docs/results/
        assert os.path.isfile(os.path.join(ROOT, "docs", "results", target)), target
