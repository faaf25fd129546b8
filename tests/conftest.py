"""Shared fixtures: a tiny RecBole atomic dataset made for the tests, and a config that trains on it in seconds."""

import importlib.util
import os
import string
import sys

import pytest

try:
    import recbole  # noqa: F401
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Tokenizer
except ModuleNotFoundError as error:  # the tests run in the project's environment, not in any Python
    pytest.exit(
        f"{error.name} is not installed in this Python ({error}). Install the project and its test dependencies "
        'first, as the README says: python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[test]", '
        "then run .venv/bin/python -m pytest tests -q (or: bash .ci/run).",
        returncode=4,
    )

torch.set_num_threads(1)  # CI has 2 cores; explicit, so timings and results do not depend on the machine

N_USERS, N_ITEMS, SEQ_LEN = 40, 60, 12
WORDS = ["red", "blue", "green", "space", "war", "love", "story", "night", "city", "game", "quest", "dream"]


def write_tiny_dataset(folder, name="tiny", empty_title_items=(7,)):
    r"""Write ``<folder>/<name>/<name>.inter`` and ``.item``: users walk the item ids with a user-specific step, so a
    sequential model has a pattern to learn. Items in ``empty_title_items`` get an empty title cell."""
    path = os.path.join(folder, name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, f"{name}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user in range(1, N_USERS + 1):
            start, step = user % N_ITEMS, 1 + user % 3
            for position in range(SEQ_LEN):
                f.write(f"{user}\t{1 + (start + step * position) % N_ITEMS}\t{position}\n")
    with open(os.path.join(path, f"{name}.item"), "w") as f:
        f.write("item_id:token\ttitle:token_seq\n")
        for item in range(1, N_ITEMS + 1):
            title = "" if item in empty_title_items else f"{WORDS[item % 12]} {WORDS[(item // 12) % 12]} {item % 5}"
            f.write(f"{item}\t{title}\n")
    return path


@pytest.fixture(autouse=True)
def no_pytest_arguments(monkeypatch):
    r"""RecBole's Config reads every ``--key=value`` of ``sys.argv`` as a setting, and the plugin stops on unknown
    keys: pytest's own options (``--tb=short``) must not reach it. Tests that run the CLI set ``sys.argv`` again."""
    monkeypatch.setattr(sys, "argv", sys.argv[:1])


@pytest.fixture
def tiny_dataset_dir(tmp_path, monkeypatch):
    r"""A data_path holding the dataset ``tiny``; the working directory moves to ``tmp_path`` so RecBole's
    ``log/`` and ``log_tensorboard/`` land there, not in the repository."""
    monkeypatch.chdir(tmp_path)
    data_path = tmp_path / "data"
    write_tiny_dataset(str(data_path))
    return str(data_path)


def tiny_settings(folder, **overrides):
    r"""RecBole settings for a run on ``tiny`` (written under ``folder``) that takes seconds; checkpoints go to
    ``folder/saved``. A plain function, so module-scoped fixtures that train once can use it too."""
    if not os.path.isdir(os.path.join(folder, "data", "tiny")):
        write_tiny_dataset(os.path.join(folder, "data"))
    settings = {
        "data_path": os.path.join(folder, "data"),
        "dataset": "tiny",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title"]},
        "MAX_ITEM_LIST_LENGTH": 10,
        "epochs": 1,
        "train_batch_size": 64,
        "eval_batch_size": 256,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "n_heads": 2,
        "show_progress": False,
        "checkpoint_dir": os.path.join(folder, "saved"),
        "state": "ERROR",
        "metrics": ["Recall", "NDCG", "MRR", "Hit"],
        "topk": [5, 10],
        "valid_metric": "NDCG@10",
        "seed": 2020,
        "reproducibility": True,
        "gpu_id": "",
        "worker": 0,
    }
    return dict(settings, **overrides)


#: the command-line flags of a tiny FLR run that takes seconds (run_recbole_flr.py's --key=value form)
TINY_CLI_FLAGS = [
    "--MAX_ITEM_LIST_LENGTH=10",
    "--hidden_size=16",
    "--inner_size=32",
    "--n_layers=1",
    "--n_factors=2",
    "--epochs=1",
    "--grpo_epochs=1",
    "--show_progress=False",
    "--gpu_id=",
    "--state=ERROR",
]


@pytest.fixture
def tiny_config_dict(tiny_dataset_dir, tmp_path):
    r"""RecBole settings for a run on ``tiny`` that takes seconds."""
    return tiny_settings(str(tmp_path))


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    r"""A tiny Qwen2 causal LM and a byte-level BPE tokenizer saved with save_pretrained: nothing downloaded."""
    path = str(tmp_path_factory.mktemp("tiny_llm"))
    chars = ["<|endoftext|>"] + list(string.ascii_letters + string.digits) + ["Ġ"]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({"re": len(vocab), "red": len(vocab) + 1})
    Qwen2Tokenizer(vocab=vocab, merges=[("r", "e"), ("re", "d")]).save_pretrained(path)
    config = AutoConfig.for_model(
        "qwen2",
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


def build_flr(config_dict, **overrides):
    r"""(model, train_data, dataset) for FLR on ``tiny`` with ``overrides``, as RecBole's quick start builds them."""
    from recbole_flr import prepare

    _, model, dataset, train_data, _, _ = prepare("FLR", "tiny", config_dict=dict(config_dict, **overrides))
    return model, train_data, dataset


def benchmark_script(name):
    r"""Import ``benchmarks/<name>.py`` (the benchmarks are scripts, not a package) so its functions can be tested;
    ``research/<name>`` imports ``benchmarks/research/<name>.py``, a research probe."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "benchmarks", *name.split("/")) + ".py"
    spec = importlib.util.spec_from_file_location(os.path.basename(name), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
