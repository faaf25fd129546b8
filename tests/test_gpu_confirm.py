import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import gpu_confirm  # noqa: E402


def test_tuned_plan_restricts_flr_to_ml1m_and_runs_the_tuned_baseline_on_both():
    runs = gpu_confirm.plan_runs("tuned", ["ml-1m", "amazon-games"], [1, 2])
    assert {(d, m, label) for d, m, _, _, label, _ in runs} == {
        ("ml-1m", "FLR", "default"),
        ("ml-1m", "FLR", "backbone"),
        ("ml-1m", "SASRecAllPos", "tuned"),
        ("amazon-games", "SASRecAllPos", "tuned"),
    }
    assert len(runs) == 4 * 2  # every seed of each
    tuned = [extra for _, m, _, extra, label, _ in runs if label == "tuned"]
    assert all(extra == gpu_confirm.TUNED for extra in tuned)


def test_defaults_plan_keeps_priority_order_and_text_runs_on_text_datasets_only():
    runs = gpu_confirm.plan_runs("defaults", ["amazon-games", "ml-1m"], [7], text_datasets=["amazon-games"])
    labels = [(d, label) for d, _, _, _, label, _ in runs]
    # the first group (every model at its defaults) on both datasets comes before any title-feature run
    first_text = min(i for i, (_, label) in enumerate(labels) if "llmtext" in label)
    assert {label for _, label in labels[:first_text]} == {"default", "allpos+backbone"}
    assert len(labels[:first_text]) == 6
    assert all(d == "amazon-games" for d, label in labels if "llmtext" in label)
    assert ("ml-1m", "allpos+notext") in labels


def test_text_plan_reads_the_feature_cache_for_the_llmtext_rows_only():
    runs = gpu_confirm.plan_runs("text", ["ml-1m"], [1, 2, 3])
    assert len(runs) == 9
    for _, _, _, extra, label, _ in runs:
        assert extra == (gpu_confirm.TEXT if label.endswith("llmtext") else {})
    assert sorted({label for *_, label, _ in runs}) == ["default+llmtext", "notext"]


def test_length_plan_runs_both_arms_at_200_before_50_on_ml1m_only():
    runs = gpu_confirm.plan_runs("length", ["ml-1m", "amazon-games"], [1, 2, 3])
    assert len(runs) == 12 and {d for d, *_ in runs} == {"ml-1m"}
    labels = [label for *_, label, _ in runs]
    assert all(label.endswith("@len200") for label in labels[:6]) and all(x.endswith("@len50") for x in labels[6:])
    for _, _, variant, extra, label, _ in runs:
        assert label.startswith(variant) and extra == (gpu_confirm.LONG if label.endswith("@len200") else {})
