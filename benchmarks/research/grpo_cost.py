r"""Cost of FLR's latent GRPO stage relative to SFT: time per training batch and per (estimated) epoch.

Both stages run through :class:`~recbole_flr.trainer.FLRTrainer`'s public ``fit``, one epoch per call (one trainer
per stage, ``train_stages`` ``[sft]`` and ``[grpo]``), and are timed by its ``train_epoch`` callback (data loading,
forward, backward, optimizer step: what RecBole's ``fit`` times as "training"), on the same batches, same model,
same threads, from the same initial weights (two copies of one model). SFT and GRPO alternate for ``--repeats`` rounds
so that load on a shared machine hits both alike; medians are reported. With ``--batches N`` only the first N
batches of the epoch are timed per round (after one warm-up batch per stage) and the full-epoch time is
extrapolated from the per-batch time; ``--batches 0`` times whole epochs.

This measures cost only, not quality. Example:

    .venv/bin/python benchmarks/research/grpo_cost.py --dataset ml-100k --batches 8
    .venv/bin/python benchmarks/research/grpo_cost.py --dataset amazon-games --data_path ../shared/datasets --batches 4

Prints a table and writes benchmarks/results/grpo_cost-<dataset>.json.
"""

import argparse
import copy
import json
import os
import platform
import statistics
import sys
from itertools import islice

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
import recbole  # noqa: E402
from common import RESULTS, SCRATCH, cpu_name  # noqa: E402
from recbole.utils import init_logger  # noqa: E402

from recbole_flr.config import Config  # noqa: E402
from recbole_flr.quick_start import prepare  # noqa: E402
from recbole_flr.trainer import FLRTrainer  # noqa: E402


class FirstBatches:
    r"""The first ``n`` batches of a RecBole dataloader (all of them if n is 0), as an iterable."""

    def __init__(self, loader, n):
        self.loader, self.n = loader, n

    def __iter__(self):
        return iter(self.loader) if not self.n else islice(iter(self.loader), self.n)

    def __len__(self):
        return len(self.loader) if not self.n else min(self.n, len(self.loader))

    def __getattr__(self, name):  # the rest of the loader (dataset, generator, ...) as RecBole's fit reads it
        return getattr(self.loader, name)


def parallel_decode(model):
    r"""What-if prototype (``--decode parallel``), now what ``FLR.decode`` does: pass 2 with the G thoughts of a
    history as G query tokens over ONE copy of its pass-1 KV cache (each thought sees the history and itself, through
    the backbone's 4D mask), instead of repeating the cache G times; replaces ``model.decode``."""

    def decode(pass1, thought):
        batch, dim = pass1.mask.size(0), thought.size(1)
        group = thought.size(0) // batch
        sees = pass1.attention_mask.bool()[:, None, :].expand(batch, group, -1)  # [B G P+L]
        positions = pass1.thought_position[:, None].expand(batch, group)
        states = model.backbone.extend(pass1.cache, thought.view(batch, group, dim), positions, sees)
        return model.user_projection(states.reshape(batch * group, dim))

    return decode


class EpochClock:
    r"""A ``train_epoch`` callback (:meth:`~recbole_flr.trainer.FLRTrainer.add_callback`): the last epoch's training
    seconds and batches."""

    def __init__(self, trainer):
        self.info = None
        trainer.add_callback(self)

    def __call__(self, event, info):
        if event == "train_epoch":
            self.info = info


def stage_trainers(config, model):
    r"""An SFT and a GRPO trainer (``train_stages`` ``[sft]`` and ``[grpo]``) on two copies of ``model``, each with
    an :class:`EpochClock` (``trainer.clock``); with ``epochs`` and ``grpo_epochs`` 1 in ``config``, each ``fit``
    trains one epoch of its stage (GRPO's epochs numbered on, on the weights the last one left)."""
    sft, grpo = FLRTrainer(config, model), FLRTrainer(config, copy.deepcopy(model))
    sft.train_stages, grpo.train_stages = ["sft"], ["grpo"]
    for trainer in (sft, grpo):
        trainer.clock = EpochClock(trainer)
    return sft, grpo


def time_batches(trainer, loader, batches):
    r"""Seconds per batch of one epoch of ``trainer``'s one stage (its ``fit``, no validation, no checkpoint) on the
    first ``batches`` batches of ``loader``."""
    trainer.fit(FirstBatches(loader, batches), valid_data=None, verbose=False, saved=False)
    return trainer.clock.info["train_s"] / trainer.clock.info["batches"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None, help="default: RecBole's bundled dataset_example for ml-100k")
    parser.add_argument("--batches", type=int, default=8, help="batches timed per stage; 0 = whole epoch")
    parser.add_argument("--repeats", type=int, default=3, help="alternating SFT/GRPO rounds (medians reported)")
    parser.add_argument("--num_generations", type=int, default=8)
    parser.add_argument("--train_batch_size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--surrogate", default="gaussian", choices=["gaussian"])  # the one policy (kept in file names)
    parser.add_argument("--trainable", default="latent", choices=["latent", "all"])
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument(
        "--decode",
        default="model",
        choices=["model", "parallel"],
        help="GRPO's pass 2: the model's decode, or the parallel-query prototype (what-if)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data_path = args.data_path or os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
    config_dict = {
        "data_path": data_path,
        "train_batch_size": args.train_batch_size,
        "grpo_num_generations": args.num_generations,
        "grpo_trainable": args.trainable,
        "grpo_beta": args.beta,
        "show_progress": False,
        "state": "WARNING",
        "gpu_id": "" if not torch.cuda.is_available() else "0",
        "checkpoint_dir": os.path.join(SCRATCH, "saved"),
        "epochs": 1,  # one epoch per fit (time_batches)
        "grpo_epochs": 1,
        "worker": 0,
    }
    if args.dataset == "ml-100k":
        config_dict["load_col"] = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "movie_title"]}
    config = Config(model="FLR", dataset=args.dataset, config_dict=config_dict)
    init_logger(config)
    config, model, _, train_data, _, _ = prepare(config=config)
    sft, grpo = stage_trainers(config, model)
    if args.decode == "parallel":
        grpo.model.decode = parallel_decode(grpo.model)
    for trainer in (sft, grpo):  # warm-up (allocator, first-call overheads)
        time_batches(trainer, train_data, 1)
    # SFT and GRPO alternate round by round, so that a busy shared machine slows both alike
    rounds = [
        (time_batches(sft, train_data, args.batches), time_batches(grpo, train_data, args.batches))
        for _ in range(args.repeats)
    ]
    sft_batch = statistics.median(r[0] for r in rounds)
    grpo_batch = statistics.median(r[1] for r in rounds)
    ratios = [g / s for s, g in rounds]
    n_sft = len(FirstBatches(train_data, args.batches))

    epoch_batches = len(train_data)
    result = {
        "dataset": args.dataset,
        "n_items": train_data._dataset.item_num,
        "train_samples": len(train_data._dataset),
        "train_batch_size": config["train_batch_size"],
        "epoch_batches": epoch_batches,
        "timed_batches": n_sft,
        "MAX_ITEM_LIST_LENGTH": config["MAX_ITEM_LIST_LENGTH"],
        "hidden_size": model.hidden_size,
        "n_layers": config["n_layers"],
        "n_factors": config["n_factors"],
        "num_generations": args.num_generations,
        "surrogate": args.surrogate,
        "trainable": args.trainable,
        "beta": args.beta,
        "decode": args.decode,
        "sft_s_per_batch": sft_batch,
        "grpo_s_per_batch": grpo_batch,
        "sft_s_per_epoch": sft_batch * epoch_batches,
        "grpo_s_per_epoch": grpo_batch * epoch_batches,
        "epoch_extrapolated": bool(args.batches) and args.batches < epoch_batches,
        "grpo_over_sft": statistics.median(ratios),
        "grpo_over_sft_per_round": ratios,
        "rounds_s_per_batch": rounds,
        "machine": {
            "cpu": cpu_name(),
            "threads": torch.get_num_threads(),
            "device": str(config["device"]),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    os.makedirs(RESULTS, exist_ok=True)
    suffix = (
        ""
        if (args.surrogate, args.trainable, args.beta) == ("gaussian", "latent", 0.0)
        else (f"-{args.surrogate}-{args.trainable.replace('+', '_')}-beta{args.beta:g}")
    )
    suffix += "-parallel_decode" if args.decode == "parallel" else ""
    out = os.path.join(RESULTS, f"grpo_cost-{args.dataset}{suffix}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)

    extrapolated = " (extrapolated)" if result["epoch_extrapolated"] else ""
    print(
        f"{args.dataset}: {result['train_samples']} train samples, {epoch_batches} batches of "
        f"{config['train_batch_size']}, {result['n_items']} items, G={args.num_generations}, "
        f"{args.surrogate}/{args.trainable}/beta={args.beta}/decode={args.decode}, "
        f"{torch.get_num_threads()} threads on {cpu_name()}"
    )
    print(f"{'stage':<6} {'s/batch':>9} {'s/epoch' + extrapolated:>24}")
    print(f"{'sft':<6} {sft_batch:>9.3f} {result['sft_s_per_epoch']:>24.1f}")
    print(f"{'grpo':<6} {grpo_batch:>9.3f} {result['grpo_s_per_epoch']:>24.1f}")
    print(
        f"GRPO / SFT = {result['grpo_over_sft']:.2f}x (median of {args.repeats} alternating rounds: "
        f"{', '.join(f'{r:.2f}' for r in ratios)})  ->  {out}"
    )


if __name__ == "__main__":
    main()
