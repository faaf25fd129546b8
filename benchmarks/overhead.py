"""Per-epoch training time of a RecBole model through recbole_flr's run script versus RecBole's own run_recbole.

RecBole 1.2.1 alone cannot run on today's stack: recbole.quick_start imports ray 2.6.3, which imports pkg_resources
(gone from current setuptools); Config reads numpy aliases removed in numpy 2; its final evaluate fails on torch >= 2.6.
So the RecBole side gets a stand-in `ray` module and the numpy aliases, and is timed on its training epochs only,
the same epochs that are timed on the plugin side. Each side runs in its own process, alternately, `--repeats` times.

    python benchmarks/overhead.py --model=SASRec --dataset=ml-100k --epochs=1 --repeats=2

Prints a table and writes benchmarks/results/overhead-<model>-<dataset>.json.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCH_TIME = re.compile(r"epoch (\d+) training \[time: ([0-9.]+)s")

RECBOLE_SIDE = """
import sys, types, torch
torch.set_num_threads({threads})
sys.modules["ray"] = types.SimpleNamespace(tune=None)  # recbole.quick_start imports it and only hyper-tuning uses it
from recbole_flr.utils import numpy_compat
numpy_compat()
from recbole.quick_start import run_recbole
try:
    run_recbole(model={model!r}, dataset={dataset!r}, config_dict={config!r})
except Exception as error:  # the final evaluate's torch.load fails on torch >= 2.6; the epochs are already timed
    print("RecBole run ended with", type(error).__name__, file=sys.stderr)
"""
PLUGIN_SIDE = """
import torch
torch.set_num_threads({threads})
from recbole_flr import run_recbole_flr
run_recbole_flr(model={model!r}, dataset={dataset!r}, config_dict={config!r})
"""


def epoch_times(code, workdir):
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=workdir, env=env)
    times = [float(t) for _, t in EPOCH_TIME.findall(re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr))]
    if not times:
        raise RuntimeError(f"no epoch time in the log:\n{(out.stdout + out.stderr)[-3000:]}")
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default="dataset/")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    config = {
        "epochs": args.epochs,
        "data_path": os.path.abspath(args.data_path),
        "show_progress": False,
        "train_neg_sample_args": None,
        "gpu_id": "",
        "eval_step": 10**6,
        "checkpoint_dir": "saved",
    }
    workdir = os.path.join(REPO, "benchmarks", "scratch")
    os.makedirs(workdir, exist_ok=True)
    fmt = dict(model=args.model, dataset=args.dataset, config=config, threads=args.threads)
    sides = {"recbole_flr": PLUGIN_SIDE.format(**fmt), "recbole": RECBOLE_SIDE.format(**fmt)}
    times = {side: [] for side in sides}
    for _ in range(args.repeats):
        for side, code in sides.items():
            times[side] += epoch_times(code, workdir)
    rows = {
        side: {"epochs_timed": len(t), "mean_s": statistics.mean(t), "min_s": min(t), "max_s": max(t)}
        for side, t in times.items()
    }
    print(f"{args.model} on {args.dataset}, {args.threads} torch threads, {platform.processor() or platform.machine()}")
    print(f"{'path':<12} {'epochs':>6} {'mean s':>8} {'min s':>8} {'max s':>8}")
    for side, row in rows.items():
        print(f"{side:<12} {row['epochs_timed']:>6} {row['mean_s']:>8.1f} {row['min_s']:>8.1f} {row['max_s']:>8.1f}")
    ratio = rows["recbole_flr"]["mean_s"] / rows["recbole"]["mean_s"]
    print(f"ratio recbole_flr / recbole: {ratio:.3f}")
    os.makedirs(os.path.join(REPO, "benchmarks", "results"), exist_ok=True)
    out = os.path.join(REPO, "benchmarks", "results", f"overhead-{args.model}-{args.dataset}.json")
    with open(out, "w") as f:
        json.dump(
            {
                "args": vars(args),
                "times": times,
                "summary": rows,
                "ratio": ratio,
                "machine": f"{os.cpu_count()} cores, {platform.platform()}",
                "date": time.strftime("%Y-%m-%d"),
            },
            f,
            indent=2,
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
