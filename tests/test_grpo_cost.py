import torch
from conftest import benchmark_script

from recbole_flr.quick_start import prepare

grpo_cost = benchmark_script("research/grpo_cost")


def _changed(model, before):
    return {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}


def test_each_timed_fit_trains_one_epoch_of_its_own_stage_through_the_public_hooks(tiny_config_dict):
    config, model, _, train_data, _, _ = prepare(
        "FLR", "tiny", config_dict={**tiny_config_dict, "epochs": 1, "grpo_epochs": 1, "grpo_trainable": "latent"}
    )
    sft, grpo = grpo_cost.stage_trainers(config, model)
    assert sft.model is not grpo.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}

    assert grpo_cost.time_batches(grpo, train_data, 1) > 0
    info = grpo.clock.info
    assert (info["stage"], info["epoch"], info["batches"]) == ("grpo", 0, 1)
    changed = _changed(grpo.model, before)
    assert changed and all(name.startswith("latent.") for name in changed)  # GRPO trained the latent module only
    assert not _changed(sft.model, before)  # the SFT copy is untouched
    assert {name: p.requires_grad for name, p in grpo.model.named_parameters()} == trainable  # given back

    grpo_cost.time_batches(grpo, train_data, 1)
    assert grpo.clock.info["epoch"] == 1  # the next GRPO epoch, on from the last one's weights

    grpo_cost.time_batches(sft, train_data, 2)
    assert (sft.clock.info["stage"], sft.clock.info["epoch"], sft.clock.info["batches"]) == ("sft", 0, 2)
    assert any(not name.startswith("latent.") for name in _changed(sft.model, before))  # SFT trains the backbone too
