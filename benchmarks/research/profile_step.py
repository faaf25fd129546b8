r"""Where one training step of FLR (all-positions mode) and SASRecAllPos spends its time, on the same batches.

Both models are built on the same RecBole train loader; each forward part is timed by wrapping the model's own
methods (nothing is re-implemented here), then the backward pass and the Adam step are timed as a whole. Medians over
``--steps`` batches after one warm-up batch, one process, back to back. With one thread (the default) every time is
the thread's CPU time, so other work on a shared machine does not inflate it; with more, wall-clock time.

    .venv/bin/python benchmarks/research/profile_step.py --dataset amazon-games --data_path ../shared/datasets --steps 5
    .venv/bin/python benchmarks/research/profile_step.py --dataset ml-1m --data_path ../shared/datasets --steps 3

Prints a table; writes benchmarks/results/profile_step-<dataset>.json.
"""

import argparse
import functools
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
from common import PROTOCOL, RESULTS, ROOT, SCRATCH, clock  # noqa: E402

from recbole_flr.config import Config  # noqa: E402
from recbole_flr.quick_start import prepare  # noqa: E402

#: (label, model, extra config, methods to time: attribute path -> part name)
SPECS = [
    (
        "FLR allpos",
        "FLR",
        {"train_all_positions": True},
        {
            "encode": "pass 1 (backbone over the history)",
            "latent.forward_at": "latent factors",
            "backbone.extend": "pass 2 (thought tokens)",
            "item_scores": "item scores",
            "loss_fct.forward": "cross-entropy",
            "regularisers": "regularisers",
        },
    ),
    (
        "SASRecAllPos",
        "SASRecAllPos",
        {},
        {
            "sequence_output": "transformer over the history",
            "all_positions_forward": "(all_positions_forward)",
            "loss_fct.forward": "cross-entropy",
        },
    ),
]


def timed(record, part, method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        start = clock()
        out = method(*args, **kwargs)
        record[part] = record.get(part, 0.0) + clock() - start
        return out

    return wrapper


def profile(label, model_name, extra, parts, args):
    config = Config(
        model=model_name,
        dataset=args.dataset,
        config_file_list=[os.path.join(ROOT, PROTOCOL)],
        config_dict={
            "data_path": args.data_path,
            "gpu_id": "",
            "show_progress": False,
            "state": "WARNING",
            "checkpoint_dir": os.path.join(SCRATCH, "saved"),
            **extra,
        },
    )
    config, model, _, train_data, _, _ = prepare(config=config)
    record = {}
    for path, part in parts.items():
        owner, name = model, path
        while "." in name:
            head, name = name.split(".", 1)
            owner = getattr(owner, head)
        setattr(owner, name, timed(record, part, getattr(owner, name)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    rows, iterator = [], iter(train_data)
    for _ in range(args.steps + 1):
        batch = next(iterator)
        record.clear()
        start = clock()
        loss = model.calculate_loss(batch)
        loss = sum(loss) if isinstance(loss, tuple) else loss
        forward = clock()
        optimizer.zero_grad()
        loss.backward()
        backward = clock()
        optimizer.step()
        end = clock()
        rows.append(
            {
                **record,
                "forward (total)": forward - start,
                "backward": backward - forward,
                "optimizer step": end - backward,
                "step (total)": end - start,
            }
        )
    rows = rows[1:]  # the warm-up step
    median = {key: statistics.median(r.get(key, 0.0) for r in rows) for key in rows[0]}
    return {
        "label": label,
        "batch_rows": len(batch),
        "batches_per_epoch": len(train_data),
        "median_s": median,
        "steps": rows,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="amazon-games")
    parser.add_argument("--data_path", default=os.path.join(ROOT, "..", "shared", "datasets"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--detect_anomaly",
        action="store_true",
        help="turn autograd anomaly detection back on, as RecBole 1.2.1 leaves it (to measure its cost)",
    )
    args = parser.parse_args()
    args.data_path = os.path.abspath(args.data_path)
    torch.set_num_threads(args.threads)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line
    torch.autograd.set_detect_anomaly(args.detect_anomaly)  # import recbole_flr turned it off
    load = os.getloadavg()[0]
    results = [profile(*spec, args) for spec in SPECS]
    lines = [
        f"{args.dataset}: median seconds per training step ({args.steps} steps, {args.threads} thread(s), "
        f"{'CPU' if args.threads == 1 else 'wall'} time, "
        f"load average {load:.1f}, anomaly detection {'on' if args.detect_anomaly else 'off'})",
        "",
    ]
    for result in results:
        lines.append(
            f"{result['label']} (batch of {result['batch_rows']} rows, {result['batches_per_epoch']} per epoch):"
        )
        lines += [f"  {part:<40} {seconds:8.3f}" for part, seconds in result["median_s"].items()]
    print("\n".join(lines))
    os.makedirs(RESULTS, exist_ok=True)
    suffix = "-detect_anomaly" if args.detect_anomaly else ""
    out = os.path.join(RESULTS, f"profile_step-{args.dataset}{suffix}.json")
    with open(out, "w") as f:
        json.dump(
            {
                "command": "python benchmarks/research/profile_step.py "
                + " ".join(sys.orig_argv[2:] if hasattr(sys, "orig_argv") else []),
                "load_avg_1min": load,
                "clock": "thread CPU time" if args.threads == 1 else "wall",
                "detect_anomaly": args.detect_anomaly,
                "threads": args.threads,
                "results": results,
            },
            f,
            indent=1,
        )
    print(f"wrote {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    main()
