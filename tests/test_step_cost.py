"""benchmarks/step_cost.py: rows built as compare.py trains them, and the parameters each row's loss trains."""

import pytest
from conftest import benchmark_script

step_cost = benchmark_script("step_cost")


def test_a_row_is_a_model_a_compare_variant_and_settings():
    model, config = step_cost.parse_row("FLR:backbone:n_layers=3,hidden_dropout_prob=0.1")
    assert model == "FLR"
    assert config["thought_source"] == "none" and config["user_vector"] == "last_state"  # compare.py's backbone
    assert config["n_layers"] == 3 and config["hidden_dropout_prob"] == 0.1  # read as numbers, not strings
    assert step_cost.parse_row("SASRecAllPos") == ("SASRecAllPos", {})
    with pytest.raises(SystemExit, match="settings are key=value, got 'n_layers'"):
        step_cost.parse_row("FLR:default:n_layers")
    for row in ("FLR:backbon", "SASRecAllPos:backbone"):  # a typo, or an FLR variant on another model
        with pytest.raises(SystemExit, match="variants are FLR's"):
            step_cost.parse_row(row)


def test_the_backbone_alone_trains_everything_but_the_latent_module(tiny_config_dict):
    settings = {k: v for k, v in tiny_config_dict.items() if k != "dataset"}
    entries = [step_cost.build_row(row, "tiny", 2, settings) for row in ("FLR:default", "FLR:backbone")]
    step_cost.time_rows(entries, 2)
    full, backbone = entries
    assert len(full["times"]) == len(backbone["times"]) == 2 and all(t > 0 for t in full["times"])
    assert full["batches_per_epoch"] == backbone["batches_per_epoch"]  # the same loader of training windows
    latent = sum(p.numel() for name, p in full["model"].named_parameters() if name.startswith("latent."))
    built = sum(p.numel() for p in backbone["model"].parameters())
    assert backbone["parameters"] <= built - latent  # it builds the latent module but trains none of it
    assert 0 < full["parameters"] - backbone["parameters"] <= latent  # FLR trains (most of) the latent module too
