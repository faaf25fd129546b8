"""Corruption of test histories (pure, seeded functions) and RecBole's evaluation on the corrupted test set."""

import pytest
import torch
from conftest import tiny_settings
from recbole.data.interaction import Interaction

from recbole_flr import load_data_and_model, run_recbole_flr
from recbole_flr.robustness import (
    corrupt_interaction,
    corrupted_dataloader,
    drop_items,
    evaluate_corrupted,
    replace_items,
)
from recbole_flr.trainer import get_trainer

N_ITEMS = 50


def histories(seed=0, n=64, length=12):
    r"""Right-padded histories of random lengths in [1, length] (ids in [1, N_ITEMS)) and their lengths."""
    generator = torch.Generator().manual_seed(seed)
    seq_len = torch.randint(1, length + 1, (n,), generator=generator)
    seq = torch.randint(1, N_ITEMS, (n, length), generator=generator)
    seq[torch.arange(length)[None] >= seq_len[:, None]] = 0
    return seq, seq_len


def gen(seed):
    return torch.Generator().manual_seed(seed)


def padding(seq, seq_len):
    return torch.arange(seq.size(1))[None] >= seq_len[:, None]


# --- replace ---------------------------------------------------------------------------------------------------------


def test_replace_is_seeded_and_leaves_padding_and_lengths():
    seq, seq_len = histories()
    before = seq.clone()
    new, new_len = replace_items(seq, seq_len, 0.3, N_ITEMS, gen(1))
    again, _ = replace_items(seq, seq_len, 0.3, N_ITEMS, gen(1))
    other, _ = replace_items(seq, seq_len, 0.3, N_ITEMS, gen(2))
    assert torch.equal(new, again) and not torch.equal(new, other)
    assert torch.equal(seq, before)  # inputs untouched
    assert torch.equal(new_len, seq_len)
    assert (new[padding(seq, seq_len)] == 0).all()
    real = ~padding(seq, seq_len)
    assert ((new[real] >= 1) & (new[real] < N_ITEMS)).all()
    changed = (new != seq)[real].float().mean()
    assert 0.15 < changed < 0.45  # about 30 % (minus the random draws that hit the same item)


def test_replace_rate_zero_is_identity_and_rate_one_redraws_every_real_item():
    seq, seq_len = histories()
    assert torch.equal(replace_items(seq, seq_len, 0.0, N_ITEMS, gen(1))[0], seq)
    new, _ = replace_items(seq, seq_len, 1.0, N_ITEMS, gen(1))
    real = ~padding(seq, seq_len)
    assert (new[real] != seq[real]).float().mean() > 0.9
    assert (new[~real] == 0).all()


# --- drop ------------------------------------------------------------------------------------------------------------


def is_subsequence(short, long):
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


def test_drop_is_seeded_keeps_order_and_at_least_one_item():
    seq, seq_len = histories()
    stamps = seq * 10
    new, new_len, (new_stamps,) = drop_items(seq, seq_len, 0.3, gen(1), [stamps])
    again, again_len, _ = drop_items(seq, seq_len, 0.3, gen(1))
    assert torch.equal(new, again) and torch.equal(new_len, again_len)
    assert (new_len >= 1).all() and (new_len <= seq_len).all()
    assert (new[padding(new, new_len)] == 0).all()
    assert torch.equal(new_stamps, new * 10)  # other per-position fields move with their items
    for row in range(seq.size(0)):
        kept = new[row, : new_len[row]].tolist()
        assert 0 not in kept and is_subsequence(kept, seq[row, : seq_len[row]].tolist())
    dropped = 1 - new_len.sum() / seq_len.sum()
    assert 0.15 < dropped < 0.45


def test_drop_rate_zero_is_identity_and_rate_one_keeps_one_original_item():
    seq, seq_len = histories()
    new, new_len, _ = drop_items(seq, seq_len, 0.0, gen(1))
    assert torch.equal(new, seq) and torch.equal(new_len, seq_len)
    new, new_len, _ = drop_items(seq, seq_len, 1.0, gen(1))
    assert (new_len == 1).all() and (new[:, 1:] == 0).all()
    assert all(new[row, 0] in seq[row, : seq_len[row]] for row in range(seq.size(0)))


# --- interactions ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["replace", "drop"])
def test_corrupt_interaction_touches_only_the_history(kind):
    seq, seq_len = histories()
    target = torch.arange(1, seq.size(0) + 1)
    inter = Interaction(
        {
            "user_id": target.clone(),
            "item_id": target.clone(),
            "item_id_list": seq,
            "item_length": seq_len,
            "timestamp_list": seq.float(),
        }
    )
    new = corrupt_interaction(inter, kind, 0.5, N_ITEMS, seed=7)
    assert torch.equal(new["item_id"], target) and torch.equal(new["user_id"], target)
    assert not torch.equal(new["item_id_list"], seq)
    assert torch.equal(corrupt_interaction(inter, kind, 0.5, N_ITEMS, seed=7)["item_id_list"], new["item_id_list"])
    assert torch.equal(inter["item_id_list"], seq)  # the original is not modified
    if kind == "drop":
        assert torch.equal(new["timestamp_list"], new["item_id_list"].float())


def test_invalid_kind_and_rate_are_errors():
    seq, seq_len = histories()
    inter = Interaction({"item_id_list": seq, "item_length": seq_len})
    with pytest.raises(ValueError, match="'shuffle' is invalid"):
        corrupt_interaction(inter, "shuffle", 0.1, N_ITEMS, seed=0)
    with pytest.raises(ValueError, match="rate=1.5 is invalid"):
        replace_items(seq, seq_len, 1.5, N_ITEMS)


# --- evaluation with RecBole's evaluator -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    r"""(config, model, test_data) of an FLR trained for one epoch on ``tiny``, reloaded from its checkpoint."""
    folder = str(tmp_path_factory.mktemp("robustness"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        settings = tiny_settings(folder, eval_batch_size=16, n_factors=2, train_stages=["sft"])
        result = run_recbole_flr("FLR", "tiny", config_dict=settings)
        config, model, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
        yield config, model, test_data, result["test_result"]


def test_rate_zero_reproduces_the_clean_test_metrics_exactly(trained):
    config, model, test_data, test_result = trained
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    clean = trainer.evaluate(test_data, load_best_model=False)
    assert dict(clean) == dict(test_result)
    results = evaluate_corrupted(config, model, test_data, rates=(0.0, 1.0), trainer=trainer)
    for kind in ("replace", "drop"):
        assert dict(results[kind][0.0]) == dict(clean)
        assert set(results[kind][1.0]) == set(clean)
        assert all(0.0 <= value <= 1.0 for value in results[kind][1.0].values())
    assert dict(results["replace"][1.0]) != dict(clean)


def test_corrupted_loader_is_seeded_batches_like_the_clean_one_and_keeps_targets(trained):
    config, _, test_data, _ = trained
    loader = corrupted_dataloader(test_data, "drop", 0.3, seed=3)
    clean, corrupted = test_data._dataset.inter_feat, loader._dataset.inter_feat
    assert torch.equal(corrupted["item_id"], clean["item_id"]) and torch.equal(corrupted["user_id"], clean["user_id"])
    assert (corrupted["item_length"] <= clean["item_length"]).all() and (corrupted["item_length"] >= 1).all()
    assert loader.step == test_data.step and len(loader) == len(test_data)
    seen = torch.cat([batch[0]["item_id_list"] for batch in loader])
    assert torch.equal(seen, corrupted["item_id_list"])
    assert torch.equal(
        corrupted_dataloader(test_data, "drop", 0.3, seed=3)._dataset.inter_feat["item_id_list"],
        corrupted["item_id_list"],
    )
