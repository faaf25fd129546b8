r"""The fingerprint of a tiny FLR run with both stages, to show that a refactoring changes no result.

Trains FLR on ml-100k (bundled with RecBole) with a small model, 3 SFT and 3 GRPO epochs, a fixed seed and
``reproducibility: True``, once with ``grpo_trainable: latent`` and once with ``all`` (GRPO with the KL reference and
two updates per rollout, so every part of the GRPO step runs), and records for each: a sha256 of the best model's and
of the last checkpoint's weights, their epochs and stages, the last checkpoint's keys and the valid and test metrics.
Run it before and after a change and compare the two files (``cmp``): equal files mean bit-identical training.

    python benchmarks/research/fingerprint.py --out before.json   # on the old commit
    python benchmarks/research/fingerprint.py --out after.json    # on the new one; then: cmp before.json after.json

About 1.5 minutes on one CPU thread.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
from common import PROTOCOL, ROOT  # noqa: E402

from recbole_flr.checkpoint import last_checkpoint_file, load_checkpoint  # noqa: E402
from recbole_flr.quick_start import run_recbole_flr  # noqa: E402

SETTINGS = {
    "seed": 2020,
    "reproducibility": True,
    "epochs": 3,
    "grpo_epochs": 3,
    "grpo_stopping_step": 5,
    "hidden_size": 32,
    "inner_size": 64,
    "n_layers": 1,
    "n_heads": 2,
    "train_batch_size": 256,
    "grpo_beta": 0.05,
    "grpo_updates_per_rollout": 2,
    "grpo_learning_rate": 1e-3,
    "show_progress": False,
    "state": "WARNING",
}


def digest(state_dict):
    r"""sha256 (16 hex digits) of a state dict's names and raw tensor bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(trainable):
    work = tempfile.mkdtemp(prefix="flr-fingerprint-")
    config = {**SETTINGS, "grpo_trainable": trainable, "checkpoint_dir": os.path.join(work, "saved")}
    cwd = os.getcwd()
    os.chdir(work)  # RecBole's log/ and log_tensorboard/ land there
    try:
        result = run_recbole_flr("FLR", "ml-100k", [os.path.join(ROOT, PROTOCOL)], config)
    finally:
        os.chdir(cwd)
    best = load_checkpoint(result["saved_model_file"])
    last = load_checkpoint(last_checkpoint_file(result["saved_model_file"]))
    return {
        "valid": {name: float(value) for name, value in result["best_valid_result"].items()},
        "test": {name: float(value) for name, value in result["test_result"].items()},
        "best": [digest(best["state_dict"]), best["epoch"], best.get("stage")],
        "last": [digest(last["state_dict"]), last["epoch"], last.get("stage")],
        "last_keys": sorted(key for key in last if key not in ("state_dict", "optimizer", "config")),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value arguments as settings
    torch.set_num_threads(1)
    prints = {trainable: fingerprint(trainable) for trainable in ("latent", "all")}
    with open(args.out, "w") as f:
        json.dump(prints, f, indent=1, sort_keys=True, default=str)
    for trainable, values in prints.items():
        print(
            f"grpo_trainable {trainable}: best {values['best']}, last {values['last']}, "
            f"test NDCG@10 {values['test']['ndcg@10']}"
        )


if __name__ == "__main__":
    main()
