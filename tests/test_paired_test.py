"""benchmarks/paired_test.py: per-user metrics that add up to RecBole's, and the paired statistics, by hand."""

import numpy as np
import pytest
import torch
from conftest import benchmark_script, tiny_settings

from recbole_flr.quick_start import run_recbole_flr


@pytest.fixture(scope="module")
def paired_test():
    return benchmark_script("paired_test")


def test_rank_metrics_are_recboles_ndcg_and_recall(paired_test):
    scores = torch.tensor(
        [
            [-np.inf, 0.9, 0.8, 0.7, 0.1],  # the positive (item 3) ranks third
            [-np.inf, 0.1, 0.2, 0.3, 0.9],  # the positive (item 1) ranks fourth: outside the top 3
            [-np.inf, 0.9, 0.8, 0.7, 0.1],  # two positives (items 1 and 3) at ranks 1 and 3
        ]
    )
    ndcg, recall = paired_test.rank_metrics(scores, torch.tensor([0, 1, 2, 2]), torch.tensor([3, 1, 1, 3]), k=3)
    assert ndcg.tolist() == pytest.approx([1 / np.log2(4), 0.0, (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))])
    assert recall.tolist() == pytest.approx([1.0, 0.0, 1.0])


def test_paired_statistics_of_a_constant_shift_and_of_no_difference(paired_test):
    rng = np.random.default_rng(1)
    b = rng.uniform(0.1, 0.5, size=300)
    shifted = paired_test.paired(b + 0.1, b, n_boot=200)
    assert shifted["diff"] == pytest.approx(0.1)
    assert shifted["diff_ci"] == pytest.approx([0.1, 0.1])  # every resample has the same difference
    assert shifted["a_better"] == 300 and shifted["b_better"] == 0 and shifted["sign_p"] < 1e-50
    assert shifted["ratio"] == pytest.approx((b.mean() + 0.1) / b.mean())
    assert shifted["ratio_ci"][0] < shifted["ratio"] < shifted["ratio_ci"][1]
    same = paired_test.paired(b, b, n_boot=200)
    assert same["diff"] == 0 and same["diff_ci"] == [0.0, 0.0] and same["sign_p"] == 1.0 and same["ratio"] == 1.0
    assert same["t_p"] == 1.0 and shifted["t_p"] == 0.0
    # noise around no difference: the interval holds 0, the sign test finds nothing
    noisy = paired_test.paired(b + rng.normal(0, 0.01, size=300), b, n_boot=500)
    assert noisy["diff_ci"][0] < 0 < noisy["diff_ci"][1] and noisy["sign_p"] > 0.01


def test_history_length_bins_split_the_users_and_compare_within_each(paired_test):
    length = np.array([1, 2, 5, 9, 10, 20, 20, 3])
    a = np.array([0.2, 0.4, 0.1, 0.3, 0.5, 0.0, 1.0, 0.0])
    b = np.array([0.1, 0.2, 0.1, 0.3, 0.5, 0.5, 0.5, 0.0])
    bins = paired_test.by_length(a, b, length, [1, 5, 10, 15, 20], n_boot=50)
    assert [r["lengths"] for r in bins] == ["1-4", "5-9", "10-14", "20+"]  # 15-19 holds nobody: left out
    assert [r["n_users"] for r in bins] == [3, 2, 1, 2]
    assert bins[0]["mean_a"] == pytest.approx(0.2) and bins[0]["ratio"] == pytest.approx(2.0)
    assert bins[0]["a_better"] == 2 and bins[0]["b_better"] == 0  # user 8 (length 3) ties
    assert bins[1]["diff"] == 0 and bins[2]["ratio"] == 1.0
    assert bins[3]["mean_a"] == pytest.approx(0.5) and bins[3]["a_better"] == 1 and bins[3]["b_better"] == 1


def test_per_user_means_equal_the_runs_logged_test_results(paired_test, tiny_dataset_dir, tmp_path):
    settings = tiny_settings(str(tmp_path), epochs=2, train_stages=["sft", "grpo"], grpo_epochs=1)
    result = run_recbole_flr("FLR", "tiny", config_dict=settings)
    final = paired_test.per_user(result["saved_model_file"])
    assert final["ndcg"].mean() == pytest.approx(result["test_result"]["ndcg@10"], abs=5e-5)
    assert final["recall"].mean() == pytest.approx(result["test_result"]["recall@10"], abs=5e-5)
    assert np.all(np.diff(final["users"].astype(np.int64)) > 0)  # one row per user, sorted
    assert final["length"].shape == final["users"].shape and final["length"].dtype.kind == "i"
    assert final["length"].min() >= 1
    # the SFT weights kept by the last checkpoint: sft_test.py's figure, and the groups pair user by user
    sft = paired_test.per_user(result["saved_model_file"] + ":sft")
    last_file = result["saved_model_file"][: -len(".pth")] + "-last.pth"
    sft_test = benchmark_script("research/sft_test").sft_and_final(last_file)
    assert sft["ndcg"].mean() == pytest.approx(sft_test["sft_test"]["ndcg@10"], abs=5e-5)
    assert np.array_equal(sft["users"], final["users"])
