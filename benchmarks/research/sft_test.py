r"""Test NDCG@10 of a finished FLR run's SFT weights beside its final ones: did the GRPO stage help on test?

A run with ``train_stages: [sft, grpo]`` tests only its best model (GRPO's, if a GRPO epoch beat SFT on valid). Its
last checkpoint (``<best>-last.pth``, written in the GRPO stage) keeps a copy of what GRPO trains as SFT left it
(``grpo_sft_weights``); this script loads the best model, tests it, swaps those SFT weights in and tests again, on
the run's own test split. Prints one JSON line per checkpoint and writes
benchmarks/results/sft_test-<dataset><tag>.json. Example:

    python benchmarks/research/sft_test.py benchmarks/scratch/agA/saved/FLR-amazon-games-<...>-last.pth \
        --results_tag=-cpu
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
from common import RESULTS, swap_in_sft_weights  # noqa: E402

from recbole_flr.checkpoint import best_checkpoint_file, load_checkpoint  # noqa: E402
from recbole_flr.quick_start import load_data_and_model  # noqa: E402
from recbole_flr.trainer import get_trainer  # noqa: E402


def sft_and_final(last_file):
    r"""The valid and test results of a run's SFT weights and of its best model, as a dict."""
    best_file = best_checkpoint_file(last_file)
    config, model, _, _, valid_data, test_data = load_data_and_model(best_file)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    row = {"checkpoint": best_file, "seed": config["seed"], "best_stage": load_checkpoint(best_file).get("stage")}
    row["final_test"] = dict(trainer.evaluate(test_data, load_best_model=False))
    row["final_valid"] = dict(trainer.evaluate(valid_data, load_best_model=False))
    last = swap_in_sft_weights(model, last_file)
    row["sft_test"] = dict(trainer.evaluate(test_data, load_best_model=False))
    row["sft_valid"] = dict(trainer.evaluate(valid_data, load_best_model=False))
    row["sft_valid_logged"] = last["sft_valid_score"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("last_checkpoints", nargs="+")
    parser.add_argument("--results_tag", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for last_file in args.last_checkpoints:
        row = sft_and_final(last_file)
        rows.append(row)
        short = {k: row[k]["ndcg@10"] for k in ("sft_valid", "final_valid", "sft_test", "final_test")}
        print(json.dumps({"checkpoint": row["checkpoint"], "best_stage": row["best_stage"], **short}))
    dataset = load_checkpoint(args.last_checkpoints[0])["config"]["dataset"]
    out = os.path.join(RESULTS, f"sft_test-{dataset}{args.results_tag}.json")
    with open(out, "w") as f:
        json.dump({"command": "python " + " ".join(sys.argv), "rows": rows}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
