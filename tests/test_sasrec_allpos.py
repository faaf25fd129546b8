"""SASRecAllPos: RecBole's SASRec trained on every position of one window per user, the baseline for FLR's
``train_all_positions``."""

import math
from collections import Counter

import pytest
import torch
import yaml

from recbole_flr import Config, run_recbole_flr
from recbole_flr.config import RECBOLE_PROPERTIES_DIR
from recbole_flr.model.all_positions import ROW_FIELD, compact_train_data


def build(config_dict, **overrides):
    from recbole_flr import prepare

    _, model, _, train_data, _, _ = prepare("SASRecAllPos", "tiny", config_dict=dict(config_dict, **overrides))
    return model, train_data


def test_defaults_are_recbole_sasrec_defaults(tiny_config_dict):
    with open(f"{RECBOLE_PROPERTIES_DIR}/model/SASRec.yaml") as f:
        defaults = yaml.safe_load(f)
    ours = Config(model="SASRecAllPos", dataset="tiny", config_dict={"gpu_id": ""})
    sasrec = Config(model="SASRec", dataset="tiny", config_dict={"gpu_id": ""})
    assert {key: ours[key] for key in defaults} == {key: sasrec[key] for key in defaults}
    assert ours["hidden_dropout_prob"] == 0.5 and ours["loss_type"] == "CE"  # SASRec's, not FLR's or overall's


def test_every_position_scores_like_sasrec_on_its_prefix(tiny_config_dict):
    model, train_data = build(tiny_config_dict)
    model.eval()
    batch = next(iter(train_data))
    seq, length, target = batch["item_id_list"][:8], batch["item_length"][:8], batch["item_id"][:8]
    with torch.no_grad():
        logits, following = model.all_positions_forward(seq, length, target)
        rows, steps = (torch.arange(seq.size(1))[None] < length[:, None]).nonzero(as_tuple=True)
        prefix = torch.where(torch.arange(seq.size(1))[None] <= steps[:, None], seq[rows], 0)
        # SASRec's own scoring (its forward, gather at the last real position) of each prefix
        expected = model.full_sort_predict({model.ITEM_SEQ: prefix, model.ITEM_SEQ_LEN: steps + 1})
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    wanted = torch.where(steps + 1 < length[rows], seq[rows, (steps + 1).clamp_max(seq.size(1) - 1)], target[rows])
    assert torch.equal(following, wanted)


def test_loss_covers_every_training_target_once_and_backpropagates(tiny_config_dict):
    model, train_data = build(tiny_config_dict, MAX_ITEM_LIST_LENGTH=4)
    feat = train_data._dataset.inter_feat
    users, seq, length, target = feat["user_id"], feat["item_id_list"], feat["item_length"], feat["item_id"]
    kept = model.training_windows[feat[ROW_FIELD]]
    assert 0 < kept.sum() < len(users)
    _, following = model.all_positions_forward(seq[kept], length[kept], target[kept])
    owners = users[kept].repeat_interleave(length[kept])
    assert Counter(zip(owners.tolist(), following.tolist())) == Counter(zip(users.tolist(), target.tolist()))

    batch = {
        "user_id": users,
        "item_id_list": seq,
        "item_length": length,
        "item_id": target,
        ROW_FIELD: feat[ROW_FIELD],
    }
    loss = model.calculate_loss(batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0
    empty = {key: value[:0] for key, value in batch.items()}
    assert float(model.calculate_loss(empty).detach()) == 0.0


def test_bpr_is_rejected_with_the_key(tiny_config_dict):
    with pytest.raises(ValueError, match="loss_type"):
        build(tiny_config_dict, loss_type="BPR", train_neg_sample_args={"distribution": "uniform", "sample_num": 1})


def test_run_through_the_plugin(tiny_config_dict):
    result = run_recbole_flr(model="SASRecAllPos", dataset="tiny", config_dict=tiny_config_dict)
    assert result["test_result"] and all(math.isfinite(v) for v in result["test_result"].values())
    assert result["best_valid_score"] > 0


def test_compact_loader_holds_the_kept_windows(tiny_config_dict):
    model, train_data = build(tiny_config_dict, MAX_ITEM_LIST_LENGTH=4)
    loader = compact_train_data(train_data, model)
    rows = torch.sort(loader._dataset.inter_feat[ROW_FIELD]).values
    assert torch.equal(rows, model.training_windows.nonzero().squeeze(1))  # the kept rows, each once
    full, batch = len(train_data._dataset), tiny_config_dict["train_batch_size"]
    assert loader.windows_per_batch == max(1, round(batch * len(rows) / full)) < batch
    assert abs(len(loader) - len(train_data)) <= max(1, len(train_data) // 10)  # about the same steps per epoch
