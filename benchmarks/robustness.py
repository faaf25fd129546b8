"""Robustness of FLR, SASRec and BERT4Rec to noisy test histories: RecBole's test metrics when each real history item is
replaced by a random item, or dropped, with probability 0, 10, 20, 30 %.

Each model is trained on the same data and split through ``recbole_flr.quick_start.run_recbole_flr`` (in a child
process, killed after ``--time_budget`` seconds: the best checkpoint saved so far is then the model), or loaded from
``--checkpoint MODEL=PATH``; then every model is evaluated on the same corrupted test histories (same seed) with
RecBole's ``Trainer.evaluate`` (``recbole_flr.robustness``).

    python benchmarks/robustness.py --dataset=ml-100k --epochs=3 --time_budget=1500
    python benchmarks/robustness.py --dataset=amazon-games --data_path=../shared/datasets --epochs=2
    python benchmarks/robustness.py --dataset=ml-100k --checkpoint FLR=saved/FLR-a.pth SASRec=saved/SASRec-b.pth

Prints a table; writes benchmarks/results/robustness-<dataset>.json and .md, docs/images/robustness-<dataset>.png.
"""

import argparse
import glob
import json
import logging
import os
import platform
import subprocess
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: common.py
from common import RESULTS, ROOT, SCRATCH  # noqa: E402

TRAIN = """
import torch
torch.set_num_threads({threads})
from recbole_flr import run_recbole_flr
run_recbole_flr(model={model!r}, dataset={dataset!r}, config_dict={config!r})
"""
METRIC = "ndcg@10"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (default: RecBole's)")
    parser.add_argument("--models", nargs="+", default=["FLR", "SASRec", "BERT4Rec"])
    parser.add_argument("--checkpoint", nargs="*", default=[], metavar="MODEL=PATH", help="skip training MODEL")
    parser.add_argument("--epochs", type=int, default=3, help="maximum training epochs of each model")
    parser.add_argument(
        "--time_budget",
        type=float,
        default=None,
        help="seconds of training per model; the best checkpoint saved by then is used",
    )
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--flr_stages", nargs="+", default=["sft"], help="FLR's train_stages (default: sft only)")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra RecBole settings for every model (YAML values)"
    )
    parser.add_argument("--rates", nargs="+", type=float, default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--seed", type=int, default=2020, help="corruption seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--note",
        default=None,
        help="how the --checkpoint models were trained, for the report (default: this script's budget)",
    )
    parser.add_argument("--tag", default="", help="suffix of the output names")
    return parser.parse_args(argv)


def train(model, args, workdir):
    r"""Train ``model`` in a child process; return (checkpoint path, seconds, whether the time budget cut it)."""
    import yaml

    config = {
        "epochs": args.epochs,
        "hidden_size": args.hidden_size,
        "show_progress": False,
        "gpu_id": "",
        "checkpoint_dir": os.path.join(workdir, "saved"),
        "seed": 2020,
        "reproducibility": True,
    }
    if args.data_path:
        config["data_path"] = os.path.abspath(args.data_path)
    if model == "FLR":
        config["train_stages"] = args.flr_stages
    for item in args.set:
        key, value = item.split("=", 1)
        config[key] = yaml.safe_load(value)
    os.makedirs(workdir, exist_ok=True)
    code = TRAIN.format(threads=args.threads, model=model, dataset=args.dataset, config=config)
    env = dict(os.environ, PYTHONPATH=ROOT)
    start, cut = time.time(), False
    with open(os.path.join(workdir, "train.log"), "w") as log:
        child = subprocess.Popen([sys.executable, "-c", code], cwd=workdir, env=env, stdout=log, stderr=log)
        try:
            child.wait(timeout=args.time_budget)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            cut = True
    seconds = time.time() - start
    best = best_checkpoint(config["checkpoint_dir"], model)
    if best is None:
        raise RuntimeError(f"{model} saved no checkpoint in {seconds:.0f} s (see {workdir}/train.log)")
    if child.returncode not in (0, None) and not cut:
        raise RuntimeError(f"{model} training failed (see {workdir}/train.log)")
    return best, seconds, cut


def best_checkpoint(folder, model):
    r"""The newest best model of ``model`` in ``folder``, never a ``-last.pth`` (the state after the last epoch, which
    is rewritten after every epoch and so was usually the newest file); None when there is none."""
    files = glob.glob(os.path.join(folder, f"{model}-*.pth"))
    files = sorted((f for f in files if not f.endswith("-last.pth")), key=os.path.getmtime)
    return files[-1] if files else None


def evaluate(model_file, args):
    import torch

    from recbole_flr.checkpoint import load_checkpoint
    from recbole_flr.quick_start import load_data_and_model
    from recbole_flr.robustness import CORRUPTIONS, evaluate_corrupted

    torch.set_num_threads(args.threads)
    config, model, _, _, _, test_data = load_data_and_model(model_file)
    start = time.time()
    results = evaluate_corrupted(config, model, test_data, CORRUPTIONS, args.rates, args.seed)
    checkpoint = load_checkpoint(model_file)
    return {
        "checkpoint": os.path.relpath(model_file, ROOT),
        "best_epoch": checkpoint["epoch"],
        "best_valid_score": checkpoint["best_valid_score"],
        "settings": {
            key: config[key]
            for key in (
                "hidden_size",
                "n_layers",
                "n_heads",
                "MAX_ITEM_LIST_LENGTH",
                "train_batch_size",
                "learning_rate",
                "loss_type",
                "epochs",
            )
        },
        "eval_seconds": time.time() - start,
        "results": {
            kind: {str(rate): {k: float(v) for k, v in m.items()} for rate, m in r.items()}
            for kind, r in results.items()
        },
    }


def table(report, rates):
    kinds = ("replace", "drop")
    head = "| model | epochs (best) | " + " | ".join(f"{k} {int(r * 100)}%" for k in kinds for r in rates)
    head += " | " + " | ".join(f"{k} kept at {int(rates[-1] * 100)}%" for k in kinds) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(rates) + 2)]
    for name, row in report["models"].items():
        cells = [name, f"{row.get('epochs', '?')} ({row['best_epoch'] + 1})"]
        for kind in kinds:
            cells += [f"{row['results'][kind][str(r)][METRIC]:.4f}" for r in rates]
        for kind in kinds:
            clean, worst = row["results"][kind][str(rates[0])][METRIC], row["results"][kind][str(rates[-1])][METRIC]
            cells.append(f"{worst / clean:.1%}" if clean else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report, rates, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True, constrained_layout=True)
    x = [int(r * 100) for r in rates]
    for ax, kind in zip(axes, ("replace", "drop")):
        for name, row in report["models"].items():
            y = [row["results"][kind][str(r)][METRIC] for r in rates]
            ax.plot(x, y, marker="o", linewidth=2.5 if name == "FLR" else 1.5, label=name)
        ax.set_title({"replace": "history items replaced by random items", "drop": "history items dropped"}[kind])
        ax.set_xlabel("corruption rate (% of history items)")
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test NDCG@10")
    axes[0].legend()
    title = f"Robustness on {report['dataset']} (budget-limited training: {report['budget_note']})"
    fig.suptitle(textwrap.fill(title, 140), fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line: not these flags
    logging.disable(logging.INFO)  # load_data_and_model logs the whole config of each model at INFO
    given = dict(item.split("=", 1) for item in args.checkpoint)
    scratch = os.path.join(SCRATCH, "robustness", args.dataset + args.tag)
    budget = f"at most {args.epochs} epoch{'s' if args.epochs > 1 else ''}"
    budget += f" or {args.time_budget:.0f} s" if args.time_budget else ""
    report = {
        "dataset": args.dataset,
        "command": "python benchmarks/robustness.py " + " ".join(argv),
        "machine": f"{os.cpu_count()} CPU cores (shared), {platform.platform()}, {args.threads} torch threads",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "budget_note": args.note
        or budget
        + " per model, hidden_size "
        + str(args.hidden_size)
        + ", FLR stages "
        + "+".join(args.flr_stages)
        + "".join(", " + item for item in args.set),
        "corruption_seed": args.seed,
        "metric": METRIC,
        "models": {},
    }
    for model in args.models:
        if model in given:
            model_file, seconds, cut = given[model], None, False
        else:
            print(f"training {model} ({budget}) ...", flush=True)
            try:
                model_file, seconds, cut = train(model, args, os.path.join(scratch, model))
            except RuntimeError as error:  # e.g. no epoch finished within the time budget: report, go on
                print(f"{model}: {error}", flush=True)
                report.setdefault("failed", {})[model] = str(error)
                continue
        row = evaluate(model_file, args)
        epochs = row["settings"]["epochs"] if model not in given else "?"  # a given checkpoint's run is not known here
        row.update({"train_seconds": seconds, "cut_by_time_budget": cut, "epochs": epochs})
        report["models"][model] = row
        print(
            f"{model}: best epoch {row['best_epoch'] + 1}, clean {METRIC} "
            f"{row['results']['replace'][str(args.rates[0])][METRIC]:.4f}",
            flush=True,
        )
    text = table(report, args.rates)
    print(text)
    results_dir, images_dir = RESULTS, os.path.join(ROOT, "docs", "images")
    os.makedirs(results_dir, exist_ok=True)
    os.makedirs(images_dir, exist_ok=True)
    name = f"robustness-{args.dataset}{args.tag}"
    with open(os.path.join(results_dir, name + ".json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(results_dir, name + ".md"), "w") as f:
        f.write(f"# Robustness on {args.dataset}: test {METRIC} under corrupted histories\n\n")
        f.write(f"Command: `{report['command']}`  \nMachine: {report['machine']}  \nDate: {report['date']}\n\n")
        f.write(
            f"**Models are budget-limited** ({report['budget_note']}): they are not trained to convergence, so "
            "the absolute figures are below published ones; all models saw the same data, split and corrupted "
            f"test histories (seed {args.seed}). 'kept' = {METRIC} at the highest rate / at rate 0.\n\n"
        )
        f.write(text + "\n")
    plot(report, args.rates, os.path.join(images_dir, name + ".png"))
    print(f"wrote benchmarks/results/{name}.json, .md and docs/images/{name}.png")


if __name__ == "__main__":
    main()
