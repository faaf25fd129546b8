"""The FLR model on the tiny dataset: padding, pass 2, scores, gradients, LoRA, configuration errors, a full run."""

import math

import pytest
import torch
from conftest import build_flr as build

from recbole_flr import run_recbole_flr


def first_batch(train_data):
    return next(iter(train_data))


# --- padding and pass 2 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["qwen2", "llama", "pretrained"])
def test_padding_never_changes_the_user_vector(tiny_config_dict, tiny_llm_dir, backbone):
    extra = {"llm_arch": backbone} if backbone != "pretrained" else {"llm_path": tiny_llm_dir, "llm_prompt": "red"}
    model, train_data, _ = build(tiny_config_dict, **extra)
    model.eval()
    batch = first_batch(train_data)
    seq, length = batch["item_id_list"], batch["item_length"]
    assert length.min() == 1 and (length < seq.size(1)).any()  # short histories, right-padded
    with torch.no_grad():
        user = model(seq, length)
        longer = torch.cat([seq, torch.zeros(seq.size(0), 7, dtype=seq.dtype)], dim=1)  # MAX length 10 -> 17
        torch.testing.assert_close(model(longer, length), user, rtol=1e-4, atol=1e-5)
        positions = torch.arange(longer.size(1))[None]
        garbage = torch.where(positions < length[:, None], longer, torch.randint_like(longer, 1, model.n_items))
        torch.testing.assert_close(model(garbage, length), user, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone", ["embedded", "pretrained"])
def test_decode_reuses_pass1_without_changing_it(tiny_config_dict, tiny_llm_dir, backbone):
    extra = {} if backbone == "embedded" else {"llm_path": tiny_llm_dir, "llm_prompt": "red"}
    model, train_data, _ = build(tiny_config_dict, user_vector="pass2", **extra)  # the default head has no pass 2
    model.eval()
    batch = first_batch(train_data)
    with torch.no_grad():
        pass1 = model.encode(batch["item_id_list"], batch["item_length"])
        before = [(k.clone(), v.clone()) for k, v in pass1.cache]
        thought = model.reason(pass1).thought
        user = model.decode(pass1, thought)
        group = model.decode(pass1, thought.repeat_interleave(3, dim=0))  # B' = B * G, GRPO's layout
        torch.testing.assert_close(group, user.repeat_interleave(3, dim=0))
        torch.testing.assert_close(model.decode(pass1, thought), user)
        for (k0, v0), (k1, v1) in zip(before, pass1.cache):
            assert torch.equal(k0, k1) and torch.equal(v0, v1)
        noisy = thought.repeat_interleave(2, dim=0) + torch.randn(2 * thought.size(0), thought.size(1))
        grouped = model.decode(pass1, noisy)
        assert not torch.allclose(grouped[0], grouped[1])
        # the G thought tokens of a history never see each other: each equals its own one-token decode
        torch.testing.assert_close(grouped[0::2], model.decode(pass1, noisy[0::2]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(grouped[1::2], model.decode(pass1, noisy[1::2]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backbone", ["embedded", "pretrained"])
def test_pass2_is_the_next_token_of_one_uncached_pass(tiny_config_dict, tiny_llm_dir, backbone):
    # DecoderBackbone.extend (cache + 4D mask) against the body reading [prompt][history][thought] with a 2D mask
    extra = {} if backbone == "embedded" else {"llm_path": tiny_llm_dir, "llm_prompt": "red"}
    model, train_data, _ = build(tiny_config_dict, user_vector="pass2", **extra)
    model.eval()
    batch = first_batch(train_data)
    seq, length = batch["item_id_list"], batch["item_length"]
    body = model.backbone
    with torch.no_grad():
        pass1 = model.encode(seq, length)
        thought = model.reason(pass1).thought  # [B D]
        prompt = body.embed_token_ids(body.prompt_ids)[None].expand(len(seq), -1, -1)
        inputs = torch.cat([prompt, model.item_embeddings(seq), thought[:, None]], dim=1)
        mask = torch.cat([pass1.attention_mask, torch.ones(len(seq), 1, dtype=torch.long)], dim=1)
        positions = torch.arange(mask.size(1))[None].repeat(len(seq), 1)
        positions[:, -1] = pass1.thought_position
        out = body.body(inputs_embeds=inputs.to(body.dtype), attention_mask=mask, position_ids=positions)
        expected = model.user_projection(out["last_hidden_state"][:, -1].float())
        torch.testing.assert_close(model.decode(pass1, thought), expected, atol=1e-5, rtol=1e-4)


def test_full_sort_predict_agrees_with_predict(tiny_config_dict):
    model, train_data, _ = build(tiny_config_dict)
    model.eval()
    batch = first_batch(train_data)
    with torch.no_grad():
        full = model.full_sort_predict(batch)
        assert full.shape == (len(batch), model.n_items)
        picked = full.gather(1, batch["item_id"][:, None]).squeeze(1)
        torch.testing.assert_close(model.predict(batch), picked, rtol=1e-5, atol=1e-5)


# --- loss and gradients ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user_vector", ["latent_state", "pass2"])
def test_loss_terms_and_gradients(tiny_config_dict, user_vector):
    model, train_data, _ = build(
        tiny_config_dict, lambda_orth=0.1, lambda_div=0.1, lambda_sparse=0.1, user_vector=user_vector
    )
    model.train()
    losses = model.calculate_loss(first_batch(train_data))
    assert len(losses) == 4 and all(torch.isfinite(term) and term.dim() == 0 for term in losses)
    assert losses[0].item() == pytest.approx(math.log(model.n_items), rel=0.1)  # near uniform at initialisation
    sum(losses).backward()
    # the latent-state head scores z_T itself: W_o, which maps z_T to a token for pass 2, takes no part
    unused = {"latent.output.weight", "latent.output.bias"} if user_vector == "latent_state" else set()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert (param.grad is not None and param.grad.abs().sum() > 0) != (name in unused), name
    assert model.item_embedding.weight.grad.abs().sum() > 0
    assert model.word_embedding.weight.grad.abs().sum() > 0
    assert any(p.grad.abs().sum() > 0 for p in model.latent.parameters())


def test_single_latent_ablation_runs(tiny_config_dict):
    model, train_data, _ = build(tiny_config_dict, n_factors=1, lambda_orth=0.0, lambda_div=0.0, lambda_sparse=0.0)
    ce, orth, div, sparse = model.calculate_loss(first_batch(train_data))
    assert torch.isfinite(ce) and orth.item() == div.item() == sparse.item() == 0.0
    (ce + orth + div + sparse).backward()
    assert model.latent.factor_embedding.shape == (1, model.hidden_size)


# --- item text -------------------------------------------------------------------------------------------------------


def test_item_text_auto_none_and_empty_title(tiny_config_dict, tiny_llm_dir):
    model, _, dataset = build(tiny_config_dict)
    assert model.item_text_field == "title"
    empty = torch.tensor([dataset.token2id("item_id", "7")])  # the fixture gives item 7 an empty title
    torch.testing.assert_close(model.item_embeddings(empty), model.item_embedding(empty))
    full = torch.tensor([dataset.token2id("item_id", "8")])
    assert not torch.allclose(model.item_embeddings(full), model.item_embedding(full))

    model, _, _ = build(tiny_config_dict, item_text_field=None)
    assert model.item_text_field is None and not hasattr(model, "word_embedding")

    model, _, _ = build(tiny_config_dict, llm_path=tiny_llm_dir)
    features = model.item_text_features
    assert features.shape == (model.n_items, model.hidden_size) and torch.isfinite(features).all()
    assert features[empty].abs().sum() == 0 and features[full].abs().sum() > 0
    assert "item_text_features" not in model.state_dict()  # recomputed from the base LLM at construction


# --- pretrained backbone with LoRA -----------------------------------------------------------------------------------


def test_lora_trains_and_base_stays_frozen(tiny_config_dict, tiny_llm_dir):
    model, train_data, _ = build(tiny_config_dict, llm_path=tiny_llm_dir, hidden_size=16)
    assert model.hidden_size == 32  # the LLM's width wins over the YAML's
    lora = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if "lora_" in n}
    base = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if "lora_" not in n}
    assert lora and all(not p.requires_grad for n, p in model.backbone.named_parameters() if n in base)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = first_batch(train_data)
    model.train()
    for _ in range(2):  # LoRA B starts at 0, so A only receives a gradient from the second step on
        optimizer.zero_grad()
        sum(model.calculate_loss(batch)).backward()
        optimizer.step()
    params = dict(model.backbone.named_parameters())
    assert all(not torch.equal(params[n], value) for n, value in lora.items())
    assert all(torch.equal(params[n], value) for n, value in base.items())
    saved = model.checkpoint_state_dict()
    assert any("lora_" in key for key in saved) and "item_embedding.weight" in saved
    assert not any(key.startswith("backbone.") and "lora_" not in key for key in saved)

    # a checkpoint without the base weights restores the model: base and text features come from llm_path
    rebuilt, _, _ = build(tiny_config_dict, llm_path=tiny_llm_dir, seed=7)
    missing, unexpected = rebuilt.load_state_dict(saved, strict=False)
    assert not unexpected and all(key.startswith("backbone.") and "lora_" not in key for key in missing)
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.full_sort_predict(batch), model.full_sort_predict(batch))


# --- configuration errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"n_factors": 0}, "n_factors"),
        ({"latent_steps": 0}, "latent_steps"),
        ({"llm_arch": "gpt9"}, "llm_arch"),
        ({"llm_path": "/no/such/llm/dir"}, "llm_path"),
        ({"item_text_field": "genre"}, "item_text_field"),
        ({"loss_type": "BPR"}, "loss_type"),
        ({"lambda_orth": -1.0}, "lambda_orth"),
        ({"llm_prompt": "recommend"}, "llm_prompt"),
    ],
)
def test_bad_configuration_fails_at_construction(tiny_config_dict, overrides, key):
    with pytest.raises(ValueError, match=key):
        build(tiny_config_dict, **overrides)


def test_absent_lora_target_modules_are_named(tiny_config_dict, tiny_llm_dir):
    with pytest.raises(ValueError, match=r"lora_target_modules.*query_key_value.*q_proj"):
        build(tiny_config_dict, llm_path=tiny_llm_dir, lora_target_modules=["q_proj", "query_key_value"])


# --- through the quick start -----------------------------------------------------------------------------------------


def test_one_epoch_run_gives_finite_metrics_and_is_reproducible(tiny_config_dict):
    first = run_recbole_flr(model="FLR", dataset="tiny", config_dict=tiny_config_dict, saved=True)
    assert first["test_result"] and all(math.isfinite(value) for value in first["test_result"].values())
    assert set(first["test_result"]) >= {"ndcg@10", "recall@10", "mrr@10", "hit@10"}
    again = run_recbole_flr(model="FLR", dataset="tiny", config_dict=tiny_config_dict, saved=False)
    assert again["best_valid_result"] == first["best_valid_result"]
