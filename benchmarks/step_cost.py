r"""What a training step costs, for FLR's variants and its controls on one dataset: is the latent module cheaper or
dearer than the depth it is worth?

Each row is a model and one of ``compare.py``'s variants, with optional ``key=value`` settings
(``FLR:backbone:n_layers=3``: FLR's backbone alone with three layers). Every row is built as ``compare.py`` trains it
(``protocol.yaml``, the row's config, the train loader of the rows it trains on), then the SFT steps are timed
round-robin (one step of each row in turn, ``--rounds`` times, after a warm-up step), so a change in the machine's load
touches every row alike, as this thread's CPU time with one torch thread (waits for a busy core do not count). The
median step times the loader's batches is the SFT epoch; beside it, the parameters the loss trains (those with a
gradient after the first step: a control such as the backbone alone builds the latent module but never uses it).

    python benchmarks/step_cost.py --dataset amazon-instruments --data_path ../shared/datasets

Writes benchmarks/results/step_cost-<dataset>.json and .md (``--out``: elsewhere). The results pages' epoch costs:

    python benchmarks/step_cost.py --dataset amazon-games-mini \
        --out benchmarks/results/zoo/amazon-games-mini/step_cost \
        --rows FLR:default FLR:backbone SASRec GRU4Rec NARM CORE SINE LightSANs BERT4Rec \
        "SASRecF::selected_features=[title]" "FDSA::selected_features=[title]" SASRecAllPos
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: common.py
from common import (  # noqa: E402  (one clock and one result format with research/item_text_cost.py)
    PROTOCOL,
    RESULTS,
    ROOT,
    VARIANTS,
    machine_line,
    read_settings,
    result_row,
    time_rows,
    variant_config,
)

#: the depth question of docs/research_log.md ("amazon-instruments converged"): FLR, one factor, FLR on three layers,
#: its backbone alone on two and three layers, SASRecAllPos (the base of the ratios: the last row)
ROWS = [
    "FLR:default",
    "FLR:K1",
    "FLR:default:n_layers=3",
    "FLR:backbone",
    "FLR:backbone:n_layers=3",
    "SASRecAllPos",
]


def parse_row(row):
    r"""``MODEL[:variant[:key=value,...]]`` -> (model, config). Values are read as YAML scalars (``3`` is an int)."""
    model, variant, settings = (row.split(":", 2) + ["", ""])[:3]
    unknown = [part for part in variant.split("+") if part and part not in VARIANTS]
    if unknown or (variant not in ("", "default") and model != "FLR"):
        raise SystemExit(f"--rows {row!r}: variants are FLR's, one or more of {list(VARIANTS)} joined by '+'")
    config = variant_config(variant) if variant else {}
    config.update(read_settings(filter(None, settings.split(",")), f"--rows {row!r}"))
    return model, config


def build_row(row, dataset, rounds, settings):
    r"""One row, built as ``compare.py`` trains it: its model, an Adam optimizer over what requires grad, the first
    ``rounds + 1`` batches of the loader it trains on, and that loader's batches per epoch."""
    import torch

    from recbole_flr.model.all_positions import compact_train_data
    from recbole_flr.quick_start import prepare

    model_name, extra = parse_row(row)
    config_dict = {**settings, **extra, "train_stages": ["sft"]}  # SFT steps only
    config, model, _, train_data, _, _ = prepare(model_name, dataset, [os.path.join(ROOT, PROTOCOL)], config_dict)
    train_data = compact_train_data(train_data, model)  # as run_recbole_flr trains it
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config["learning_rate"])
    batches = [batch for _, batch in zip(range(rounds + 1), train_data)]
    return {
        "row": row,
        "model": model,
        "optimizer": optimizer,
        "batches": batches,
        "times": [],
        "batches_per_epoch": len(train_data),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-instruments")
    parser.add_argument("--data_path", default=os.path.join(ROOT, "..", "shared", "datasets"))
    parser.add_argument("--rows", nargs="+", default=ROWS, help="MODEL[:variant[:key=value,...]]; the last is the base")
    parser.add_argument("--rounds", type=int, default=20, help="timed steps per row (round-robin)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", default=None, help="result files without suffix (default: results/step_cost-<dataset>)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    settings = {"data_path": args.data_path, "gpu_id": "", "show_progress": False, "state": "ERROR"}
    entries = []
    for row in args.rows:
        entries.append(build_row(row, args.dataset, args.rounds, settings))
        print(f"[step_cost] built {row}", flush=True)
    time_rows(entries, args.rounds)

    rows = [result_row(entry["row"], entry) for entry in entries]
    base = rows[-1]
    machine = machine_line(args.threads)
    lines = [
        f"### {args.dataset}: the cost of an SFT step",
        "",
        f"Machine: {machine}. Median of {args.rounds} steps per row, round-robin.",
        "",
        f"| row | parameters trained | s/step | batches/epoch | SFT s/epoch | vs {base['row']} |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['row']} | {r['parameters']:,} | {r['step_s']:.3f} | {r['batches_per_epoch']} | "
        f"{r['epoch_s']:.1f} | {r['epoch_s'] / base['epoch_s']:.2f}x |"
        for r in rows
    ]
    lines += ["", f"Command: `python benchmarks/step_cost.py {' '.join(sys.argv[1:])}`"]
    text = "\n".join(lines)
    print(text)
    out = args.out or os.path.join(RESULTS, f"step_cost-{args.dataset}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump({"machine": machine, "rounds": args.rounds, "rows": rows}, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
