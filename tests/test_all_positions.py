"""``train_all_positions``: the loss at every position in one pass equals the per-prefix model's, and the kept windows
cover every training target exactly once."""

import math
from collections import Counter

import pytest
import torch
from conftest import build_flr as build
from conftest import tiny_settings

from recbole_flr import run_recbole_flr
from recbole_flr.errors import UserInputError
from recbole_flr.model.all_positions import ROW_FIELD, KeptWindowsLoader, compact_train_data


@pytest.mark.parametrize("backbone", ["embedded", "pretrained"])
def test_every_position_scores_like_its_prefix(tiny_config_dict, tiny_llm_dir, backbone):
    extra = {"llm_path": tiny_llm_dir, "llm_prompt": "red"} if backbone == "pretrained" else {}
    model, train_data, _ = build(tiny_config_dict, train_all_positions=True, **extra)
    model.eval()
    batch = next(iter(train_data))
    seq, length, target = batch["item_id_list"][:6], batch["item_length"][:6], batch["item_id"][:6]
    with torch.no_grad():
        logits, next_items, latent = model.all_positions_forward(seq, length, target)
        rows, steps = (torch.arange(seq.size(1))[None] < length[:, None]).nonzero(as_tuple=True)
        assert logits.shape == (int(length.sum()), model.n_items)
        prefix = torch.where(torch.arange(seq.size(1))[None] <= steps[:, None], seq[rows], 0)  # [N L]
        expected = model.full_sort_predict({model.ITEM_SEQ: prefix, model.ITEM_SEQ_LEN: steps + 1})
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
        wanted = torch.where(steps + 1 < length[rows], seq[rows, (steps + 1).clamp_max(seq.size(1) - 1)], target[rows])
        assert torch.equal(next_items, wanted)
        # the per-prefix cross-entropy, and the regularisers' inputs, are the prefix model's
        ce = torch.nn.functional.cross_entropy(logits, next_items, reduction="none")
        torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(expected, wanted, reduction="none"))
        reference = model.reason(model.encode(prefix, steps + 1))
        torch.testing.assert_close(latent.attention, reference.attention, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(latent.factors, reference.factors, rtol=1e-4, atol=1e-5)
        assert torch.equal(latent.mask, reference.mask)


def test_kept_windows_cover_every_training_target_once(tiny_config_dict):
    model, train_data, _ = build(tiny_config_dict, train_all_positions=True, MAX_ITEM_LIST_LENGTH=4)
    feat = train_data._dataset.inter_feat
    users, seq, length, target = feat["user_id"], feat["item_id_list"], feat["item_length"], feat["item_id"]
    assert torch.equal(feat[ROW_FIELD], torch.arange(len(users)))  # every training row knows its own index
    kept = model.training_windows
    assert 0 < kept.sum() < len(users)
    covered = Counter()
    _, next_items, _ = model.all_positions_forward(seq[kept], length[kept], target[kept])
    owners = users[kept].repeat_interleave(length[kept])
    covered.update(zip(owners.tolist(), next_items.tolist()))
    assert covered == Counter(zip(users.tolist(), target.tolist()))  # each (user, target) row exactly once


def test_loss_trains_only_kept_windows_and_backpropagates(tiny_config_dict):
    model, train_data, _ = build(tiny_config_dict, train_all_positions=True, lambda_sparse=0.1)
    batch = next(iter(train_data))
    losses = model.calculate_loss(batch)
    assert len(losses) == 4 and all(torch.isfinite(part) for part in losses)
    sum(losses).backward()
    assert model.latent.query_weight.grad.abs().sum() > 0
    assert model.item_embedding.weight.grad.abs().sum() > 0
    empty = {key: batch[key][:0] for key in ("user_id", "item_id_list", "item_length", "item_id", ROW_FIELD)}
    assert float(sum(model.calculate_loss(empty)).detach()) == 0.0
    foreign = {key: batch[key] for key in ("user_id", "item_id_list", "item_length", "item_id")}  # not its loader's
    with pytest.raises(UserInputError, match=ROW_FIELD):
        model.calculate_loss(foreign)


def test_invalid_value_is_rejected(tiny_config_dict):
    with pytest.raises(ValueError, match="train_all_positions"):
        build(tiny_config_dict, train_all_positions="yes")


def test_one_epoch_run_with_the_switch(tiny_config_dict):
    config = dict(tiny_config_dict, train_all_positions=True, train_stages=["sft"])
    result = run_recbole_flr(model="FLR", dataset="tiny", config_dict=config)
    assert result["test_result"] and all(math.isfinite(v) for v in result["test_result"].values())


def test_compact_loader_yields_exactly_the_kept_windows(tiny_config_dict):
    model, train_data, _ = build(
        tiny_config_dict, train_all_positions=True, train_stages=["sft"], MAX_ITEM_LIST_LENGTH=4, train_batch_size=32
    )
    loader = compact_train_data(train_data, model)
    assert isinstance(loader, KeptWindowsLoader)
    rows, kept = len(train_data._dataset), int(model.training_windows.sum())
    assert kept < rows and loader.windows_per_batch == max(1, round(32 * kept / rows))
    batches = list(loader)
    assert all(len(b) == loader.windows_per_batch for b in batches[:-1]) and len(batches) == len(loader)
    seen = torch.sort(torch.cat([b[ROW_FIELD] for b in batches])).values
    assert torch.equal(seen, model.training_windows.nonzero().squeeze(1))  # each kept window once, nothing else
    # the same windows as the full loader's kept rows: the same loss on them
    full = next(iter(train_data))
    window = full[model.training_windows[full[ROW_FIELD]]]
    model.eval()
    torch.testing.assert_close(model.calculate_loss(window)[0], model.calculate_loss(full)[0])


def test_compact_loader_only_for_all_positions(tiny_config_dict):
    model, train_data, _ = build(tiny_config_dict, train_all_positions=True, train_stages=["sft", "grpo"])
    assert isinstance(compact_train_data(train_data, model), KeptWindowsLoader)  # GRPO trains on the kept windows too
    model, train_data, _ = build(tiny_config_dict, train_all_positions=False, train_stages=["sft"])
    assert compact_train_data(train_data, model) is train_data  # per-prefix training: every row


def test_repeated_items_still_train_each_target_once(tmp_path, monkeypatch):
    r"""Users who repeat items: windows of the same user, length, target and first item, some kept and some not (a
    3-item cycle under windows of 2). Each target is still trained on exactly once."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data" / "cycles"
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{user}\t{1 + (user + position % 3) % 9}\t{position}" for user in range(1, 13) for position in range(11)]
    (folder / "cycles.inter").write_text("\n".join(lines) + "\n")
    config = dict(
        tiny_settings(str(tmp_path)),
        dataset="cycles",
        MAX_ITEM_LIST_LENGTH=2,
        train_all_positions=True,
        load_col={"inter": ["user_id", "item_id", "timestamp"]},
        item_text_field=None,
    )
    from recbole_flr import prepare

    _, model, _, train_data, _, _ = prepare("FLR", "cycles", config_dict=config)
    feat = train_data._dataset.inter_feat
    users, seq, length, target = feat["user_id"], feat["item_id_list"], feat["item_length"], feat["item_id"]
    alike = {}  # rows alike in user, length, target and first item: kept or not
    for row, key in enumerate(zip(users.tolist(), length.tolist(), target.tolist(), seq[:, 0].tolist())):
        alike.setdefault(key, set()).add(bool(model.training_windows[row]))
    assert any(len(kept) == 2 for kept in alike.values())  # only the row's index tells them apart
    trained, forward = [], model.all_positions_forward

    def recording_forward(item_seq, item_seq_len, target):
        out = forward(item_seq, item_seq_len, target)
        trained.append(out[1])  # the next item of every trained position
        return out

    monkeypatch.setattr(model, "all_positions_forward", recording_forward)
    for batch in train_data:  # RecBole's full loader: the loss reads only the kept rows of each batch
        model.calculate_loss(batch)
    assert Counter(torch.cat(trained).tolist()) == Counter(target.tolist())  # every training target exactly once
