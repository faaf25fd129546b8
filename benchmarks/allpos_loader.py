r"""What an epoch of the all-positions models spends in RecBole's train loader: every prefix row, or the kept windows.

SASRecAllPos and FLR's ``train_all_positions`` train on one window per user and L targets (one row in about 40 on
ml-1m). RecBole's train loader yields every prefix row; the plugin's :func:`compact_train_data` (what
``run_recbole_flr`` hands the trainer) yields the kept windows alone, with a batch that keeps the windows per step.
This times one full pass over each loader (collation only, no model), in this thread's CPU seconds (a busy machine's
waits do not count) and wall seconds, and checks that both passes hold the same windows.

    .venv/bin/python benchmarks/allpos_loader.py --dataset ml-1m --data_path ../shared/datasets

Prints a table; writes benchmarks/results/allpos_loader-<dataset>.json.
"""

import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


from recbole_flr.config import Config  # noqa: E402
from recbole_flr.model.all_positions import ROW_FIELD, compact_train_data  # noqa: E402
from recbole_flr.quick_start import prepare  # noqa: E402


def one_pass(loader, kept):
    r"""(CPU s, wall s, batches, the kept windows' row indices seen) of one pass over ``loader``."""
    cpu, wall, batches, seen = time.thread_time(), time.perf_counter(), 0, []
    for batch in loader:
        batches += 1
        rows = batch[ROW_FIELD]
        seen.append(rows[kept[rows]])
    return time.thread_time() - cpu, time.perf_counter() - wall, batches, torch.sort(torch.cat(seen)).values


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data_path", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config_dict = {"gpu_id": "", "state": "ERROR", "show_progress": False, "seed": 2020, "reproducibility": True}
    if args.data_path:
        config_dict["data_path"] = os.path.abspath(args.data_path)
    config = Config(
        model="SASRecAllPos",
        dataset=args.dataset,
        config_dict=config_dict,
        config_file_list=[os.path.join(ROOT, "recbole_flr", "properties", "protocol.yaml")],
    )
    config, model, _, train_data, _, _ = prepare(config=config)  # SASRecAllPos
    kept = model.training_windows
    compact = compact_train_data(train_data, model)
    rows = []
    for name, loader in (("every prefix row (RecBole's loader)", train_data), ("kept windows (compact)", compact)):
        cpu, wall, batches, seen = one_pass(loader, kept)
        assert torch.equal(seen, kept.nonzero().squeeze(1)), f"{name}: the pass does not hold each kept window once"
        rows.append(
            {
                "loader": name,
                "rows": len(loader._dataset),
                "batch": loader.step,
                "batches": batches,
                "cpu_s": cpu,
                "wall_s": wall,
            }
        )
    print(f"{args.dataset}: one pass over the train loader, collation only, 1 thread")
    print("| loader | rows | batch | batches | CPU s | wall s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['loader']} | {r['rows']} | {r['batch']} | {r['batches']} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} |")
    print(f"compact / full CPU time: {rows[1]['cpu_s'] / rows[0]['cpu_s']:.3f}")
    out = os.path.join(ROOT, "benchmarks", "results", f"allpos_loader-{args.dataset}.json")
    with open(out, "w") as f:
        json.dump({"command": " ".join(["python"] + sys.argv), "load_avg": os.getloadavg(), "rows": rows}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
