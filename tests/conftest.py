"""Shared fixtures: a tiny RecBole atomic dataset made for the tests, and a config that trains on it in seconds."""

import os

import pytest
import torch

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


@pytest.fixture
def tiny_dataset_dir(tmp_path, monkeypatch):
    r"""A data_path holding the dataset ``tiny``; the working directory moves to ``tmp_path`` so RecBole's
    ``log/`` and ``log_tensorboard/`` land there, not in the repository."""
    monkeypatch.chdir(tmp_path)
    data_path = tmp_path / "data"
    write_tiny_dataset(str(data_path))
    return str(data_path)


@pytest.fixture
def tiny_config_dict(tiny_dataset_dir, tmp_path):
    r"""RecBole settings for a run on ``tiny`` that takes seconds."""
    return {
        "data_path": tiny_dataset_dir,
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
        "checkpoint_dir": str(tmp_path / "saved"),
        "state": "ERROR",
        "metrics": ["Recall", "NDCG", "MRR", "Hit"],
        "topk": [5, 10],
        "valid_metric": "NDCG@10",
        "seed": 2020,
        "reproducibility": True,
        "gpu_id": "",
        "worker": 0,
    }
