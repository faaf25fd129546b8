import json
import os

import pytest
from conftest import benchmark_script

grpo_control = benchmark_script("research/grpo_control")


def _full_run(seed, sft, final, variant="default", cut=False):
    (sft_valid, sft_test), (valid, test) = sft, final
    return {
        "model": "FLR",
        "variant": variant,
        "seed": seed,
        "cut": cut,
        "command": f"run {seed}",
        "sft_valid_result": {"ndcg@10": sft_valid},
        "sft_test_result": {"ndcg@10": sft_test},
        "best_valid_score": valid,
        "test_result": {"ndcg@10": test},
    }


def _grpo_only(results, tag, seed, sft, final):
    (sft_valid, sft_test), (best_valid, test) = sft, final
    run = {"seed": seed, "sft_valid": sft_valid, "sft_test": sft_test, "best_valid": best_valid, "test": test}
    with open(os.path.join(results, f"grpo_quality-toy{tag}.json"), "w") as f:
        json.dump({"command": f"grpo {tag}", "runs": [run]}, f)


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(grpo_control, "RESULTS", str(tmp_path))
    runs = [
        _full_run(1, (0.050, 0.040), (0.052, 0.042)),  # real reward beats SFT on both
        _full_run(2, (0.050, 0.040), (0.050, 0.040)),  # a tie on valid: SFT stands
        _full_run(3, (0.050, 0.040), (0.060, 0.050), cut=True),  # cut: not a result, left out
        _full_run(1, (0.050, 0.040), (0.070, 0.050), variant="other"),  # another arm's variant
    ]
    with open(tmp_path / "compare-toy.json", "w") as f:
        json.dump({"runs": runs}, f)
    _grpo_only(tmp_path, "-words-random-1", 1, (0.050, 0.040), (0.051, 0.039))  # pairs with run 1's real reward
    _grpo_only(tmp_path, "-words-real-2-g1", 7, (0.050, 0.040), (0.051, 0.041))
    _grpo_only(tmp_path, "-wordsmith-real-1", 1, (0.050, 0.040), (0.090, 0.090))  # another arm's prefix
    return tmp_path


def test_cells_come_from_converged_full_runs_and_tagged_grpo_only_files(results):
    cells = grpo_control.full_runs("toy", "words", "default") + grpo_control.grpo_only_runs("toy", "words")
    keys = sorted((c["reward"], c["sft_seed"], c["grpo_seed"]) for c in cells)
    assert keys == [("random", 1, 1), ("real", 1, 1), ("real", 2, 2), ("real", 2, 7)]


def test_summary_counts_a_tie_as_no_gain_and_pairs_real_with_random(results):
    assert grpo_control.main(["--dataset", "toy", "--arms", "words=default"]) == 0
    with open(results / "grpo_control-toy.json") as f:
        written = json.load(f)
    assert written["command"] == "python benchmarks/research/grpo_control.py --dataset toy --arms words=default"
    real, random = (next(s for s in written["summary"] if s["reward"] == r) for r in ("real", "random"))
    assert (real["runs"], real["sft_seeds"], real["valid_above"], real["both_above"]) == (3, 2, 2, 2)
    assert real["test_gain_pct_max"] == pytest.approx(5.0) and real["test_gain_pct_min"] == pytest.approx(0.0)
    assert (random["runs"], random["valid_above"], random["both_above"]) == (1, 1, 0)
    (pair,) = written["pairs"]
    assert (pair["pairs"], pair["real_higher"], pair["random_higher"]) == (1, 1, 0)
    assert pair["test_pp_mean"] == pytest.approx(100 * (0.042 - 0.039) / 0.040)
    assert (
        "| words | 1 | 1 | random | 0.0500 / 0.0400 | 0.0510 / 0.0390 | -2.5 % |"
        in (results / "grpo_control-toy.md").read_text()
    )


def test_an_arm_without_a_variant_reads_its_grpo_only_files_and_an_arm_without_runs_is_refused(results):
    assert grpo_control.main(["--dataset", "toy", "--arms", "words"]) == 0
    with open(results / "grpo_control-toy.json") as f:
        assert len(json.load(f)["cells"]) == 2  # the two grpo_quality files, not the full runs
    with pytest.raises(SystemExit):
        grpo_control.main(["--dataset", "toy", "--arms", "nothing=absent"])


def test_a_control_file_this_script_did_not_write_is_never_replaced(results):
    (results / "grpo_control-toy.json").write_text(json.dumps({"runs": ["hand-assembled"]}))
    with pytest.raises(SystemExit):
        grpo_control.main(["--dataset", "toy", "--arms", "words=default"])
    assert json.loads((results / "grpo_control-toy.json").read_text()) == {"runs": ["hand-assembled"]}
    assert grpo_control.main(["--dataset", "toy", "--arms", "words=default", "--results_tag=-new"]) == 0
    assert (results / "grpo_control-toy-new.md").is_file()
