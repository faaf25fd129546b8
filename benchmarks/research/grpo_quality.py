r"""Does latent GRPO improve valid/test NDCG@10 over the SFT checkpoint it starts from?

One SFT run (``train_stages: [sft]``, RecBole's early stopping on valid NDCG@10, ``--sft_epochs`` at most; or an
existing FLR checkpoint with ``--sft_checkpoint``), then for each seed of ``--seeds`` a GRPO-only run
(``train_stages: [grpo]``) from those SFT weights through :class:`~recbole_flr.trainer.FLRTrainer`, which keeps the
SFT weights when GRPO never beats them on validation. Reports SFT and GRPO valid/test NDCG@10 (GRPO: mean and
spread over seeds) and writes benchmarks/results/grpo_quality-<dataset>.json.

GRPO trains on the rows ``run_recbole_flr`` trains on (with ``train_all_positions``, each kept window's full prefix;
before 2026-11-30 this script gave GRPO every training prefix row, which ``--every_prefix`` still does).

The seeds vary GRPO only (noise and batch order); the SFT checkpoint is shared. Example:

    .venv/bin/python benchmarks/research/grpo_quality.py --dataset ml-100k --sft_epochs 10 --grpo_epochs 3 \
        --seeds 1,2,3 MAX_ITEM_LIST_LENGTH=20
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
import recbole  # noqa: E402
from common import RESULTS, SCRATCH, split_sft_suffix, swap_in_sft_weights  # noqa: E402
from recbole.utils import init_logger  # noqa: E402

from recbole_flr.checkpoint import last_checkpoint_file, load_checkpoint, load_model_state  # noqa: E402
from recbole_flr.config import Config  # noqa: E402
from recbole_flr.model.all_positions import compact_train_data  # noqa: E402
from recbole_flr.quick_start import prepare  # noqa: E402
from recbole_flr.trainer import FLRTrainer  # noqa: E402

METRIC = "ndcg@10"


def build(config_dict, every_prefix=False):
    config = Config(model="FLR", dataset=config_dict["dataset"], config_dict=config_dict)
    init_logger(config)
    config, model, _, train_data, valid_data, test_data = prepare(config=config)
    if not every_prefix:  # the rows run_recbole_flr trains on (all positions: each kept window's full prefix)
        train_data = compact_train_data(train_data, model)
    return config, model, train_data, valid_data, test_data


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None, help="default: RecBole's bundled dataset_example for ml-100k")
    parser.add_argument(
        "--sft_checkpoint",
        default=None,
        help="start from this FLR checkpoint instead of training; <best>.pth:sft starts from the SFT weights that a "
        "GRPO run's <best>-last.pth keeps (the random-reward control from a finished run's SFT)",
    )
    parser.add_argument("--sft_epochs", type=int, default=10)
    parser.add_argument("--grpo_epochs", type=int, default=3)
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 3], help="e.g. 1,2,3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results_tag", default="", help="suffix of the results file, e.g. -gate-2020")
    parser.add_argument(
        "--every_prefix",
        action="store_true",
        help="GRPO on every training prefix row, not only on the rows run_recbole_flr trains on (with "
        "train_all_positions: each kept window's full prefix)",
    )
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (YAML values), e.g. grpo_reward=ndcg")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.overrides)}
    scratch = os.path.join(SCRATCH, "grpo_quality", args.dataset)
    base = {
        "dataset": args.dataset,
        "data_path": args.data_path or os.path.join(os.path.dirname(recbole.__file__), "dataset_example"),
        "show_progress": False,
        "gpu_id": "" if not torch.cuda.is_available() else "0",
        "checkpoint_dir": os.path.join(scratch, "saved"),
        "worker": 0,
        **overrides,
    }
    if args.dataset == "ml-100k":
        base.setdefault("load_col", {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "movie_title"]})

    started = time.time()
    if args.sft_checkpoint:
        sft_file = args.sft_checkpoint
    else:
        config, model, train_data, valid_data, _ = build({**base, "train_stages": ["sft"], "epochs": args.sft_epochs})
        trainer = FLRTrainer(config, model)
        trainer.fit(train_data, valid_data, saved=True)
        sft_file = trainer.saved_model_file
    sft_time = time.time() - started
    sft_path, sft_weights_only = split_sft_suffix(sft_file)
    sft_plain = load_checkpoint(sft_path)["config"]

    runs = []
    for seed in args.seeds:
        config_dict = {**sft_plain, **base, "train_stages": ["grpo"], "grpo_epochs": args.grpo_epochs, "seed": seed}
        config, model, train_data, valid_data, test_data = build(config_dict, args.every_prefix)
        load_model_state(model, load_checkpoint(sft_path, map_location=config["device"]), sft_path)
        if sft_weights_only:  # path:sft
            swap_in_sft_weights(model, last_checkpoint_file(sft_path))
        trainer = FLRTrainer(config, model)
        sft_test = trainer.evaluate(test_data, load_best_model=False)
        grpo_epochs = []
        trainer.add_callback(
            lambda event, info, epochs=grpo_epochs: epochs.append(info["epoch"]) if event == "train_epoch" else None
        )
        t = time.time()
        trainer.fit(train_data, valid_data, saved=True)
        grpo_time = time.time() - t
        test = trainer.evaluate(test_data, load_best_model=True)
        runs.append(
            {
                "seed": seed,
                "sft_valid": float(trainer.sft_valid_result[METRIC]),
                "sft_test": float(sft_test[METRIC]),
                "best_valid": float(trainer.best_valid_result[METRIC]),
                "test": float(test[METRIC]),
                "grpo_improved_valid": trainer.grpo_improved,
                "grpo_epochs_run": len(grpo_epochs),
                "grpo_seconds": grpo_time,
            }
        )
        print(json.dumps(runs[-1]), flush=True)

    def summary(key):
        values = [run[key] for run in runs]
        return {
            "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }

    result = {
        "dataset": args.dataset,
        "sft_checkpoint": sft_file,
        "sft_seconds": sft_time,
        "sft_valid_ndcg@10": runs[0]["sft_valid"],
        "sft_test_ndcg@10": runs[0]["sft_test"],
        "grpo_valid_ndcg@10": summary("best_valid"),
        "grpo_test_ndcg@10": summary("test"),
        "grpo_improved_valid": [run["grpo_improved_valid"] for run in runs],
        "runs": runs,
        "overrides": overrides,
        "every_prefix": args.every_prefix,
        "grpo_rows_per_epoch": len(train_data._dataset),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "threads": torch.get_num_threads(),
    }
    os.makedirs(RESULTS, exist_ok=True)
    out = os.path.join(RESULTS, f"grpo_quality-{args.dataset}{args.results_tag}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    g_valid, g_test = result["grpo_valid_ndcg@10"], result["grpo_test_ndcg@10"]
    print(f"{args.dataset} NDCG@10   valid          test")
    print(f"SFT              {result['sft_valid_ndcg@10']:.4f}         {result['sft_test_ndcg@10']:.4f}")
    print(
        f"SFT+GRPO ({len(runs)} seeds) {g_valid['mean']:.4f}+-{g_valid['std']:.4f} "
        f"{g_test['mean']:.4f}+-{g_test['std']:.4f}"
    )
    print(f"GRPO beat SFT on valid in {sum(result['grpo_improved_valid'])}/{len(runs)} seeds  ->  {out}")


if __name__ == "__main__":
    main()
