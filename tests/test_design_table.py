"""benchmarks/research/design_table.py: each design against its control, computed from compare.py's result files."""

import json

import pytest
from conftest import benchmark_script

design_table = benchmark_script("research/design_table")


def _run(variant, seed, ndcg, cut=False, model="FLR"):
    return {
        "model": model,
        "variant": variant,
        "seed": seed,
        "cut": cut,
        "best_epoch": 10 + seed,
        "epoch_s": 2.0,
        "test_result": {"ndcg@10": ndcg, "recall@10": 2 * ndcg},
    }


def test_rows_are_computed_from_the_runs_of_each_arm(tmp_path):
    runs = [
        _run("a", 1, 0.050),
        _run("a", 2, 0.054),
        _run("b", 1, 0.040, cut=True),
        _run("b", 2, 0.042),
        _run("a", 3, 0.9, model="SASRecAllPos"),
    ]
    (tmp_path / "compare-x.json").write_text(json.dumps({"runs": runs}))
    (row,) = design_table.build([("x", "design a", ("x", "a"), ("x", "b"), "")], results=str(tmp_path))
    assert row["flr"]["seeds"] == [1, 2] and row["backbone"]["cut"] == 1  # only FLR's runs of each variant
    assert row["flr"]["ndcg@10"][0] == pytest.approx(0.052) and row["flr"]["ndcg@10"][1] == pytest.approx(
        0.0028284, 1e-4
    )
    assert row["flr"]["recall@10"][0] == pytest.approx(0.104) and row["flr"]["best_epoch"] == 11.5
    assert row["ratio"] == pytest.approx(0.052 / 0.041) and row["apart"]  # 0.0492 > 0.0424
    (row,) = design_table.build([("x", "b vs a", ("x", "b"), ("x", "a"), "")], results=str(tmp_path))
    assert row["ratio"] < 1 and row["apart"]
    assert "| x | b vs a | 0.0410 ± 0.0014 (2, 1 cut) |" in design_table.markdown([row])


def test_overlapping_spreads_are_not_apart_and_a_missing_variant_is_named(tmp_path):
    runs = [_run("a", 1, 0.050), _run("a", 2, 0.054), _run("b", 1, 0.049), _run("b", 2, 0.053)]
    (tmp_path / "compare-x.json").write_text(json.dumps({"runs": runs}))
    (row,) = design_table.build([("x", "", ("x", "a"), ("x", "b"), "")], results=str(tmp_path))
    assert not row["apart"]
    with pytest.raises(SystemExit, match="compare-x.json has no FLR run of variant 'c'"):
        design_table.build([("x", "", ("x", "c"), ("x", "b"), "")], results=str(tmp_path))


def test_every_row_of_the_table_finds_its_runs():
    table = design_table.build()
    assert len(table) == len(design_table.ROWS) and all(len(row["flr"]["seeds"]) >= 3 for row in table)
