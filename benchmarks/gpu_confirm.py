"""FLR's default, its backbone-alone control and SASRecAllPos on the large datasets, in one call of a lent GPU
machine: the runs of a plan (``PLANS``) go ``--jobs`` at a time (one torch thread each, the GPU shared), most
important first, each with a training budget that ends it before ``--deadline`` (a run that converges earlier is
not cut; a cut run is marked ``cut`` in the tables, a hint and not a result).

Every run is :func:`compare.run_one` (the same subprocess, protocol and records as ``compare.py``), and every row
goes to ``benchmarks/results/compare-<dataset><tag>.json`` as it finishes; ``--out`` gets a copy of those files
after each row, so a call that is stopped early still returns what finished.

    bash benchmarks/gpu_prepare.sh          # here: wheels, datasets and feature caches into .whl/ and .devcarry/
    DEADLINE=540 bash benchmarks/gpu_session.sh --tag=-h200-1130    # a device call, carry .devcarry, .whl
    python benchmarks/gpu_confirm.py --dry_run --tag=-x                      # the plan, in order
    python benchmarks/compare.py --report_only --datasets amazon-games --results_tag=-h200-1130   # back here

The ``llmtext`` rows read SmolLM2 title features from ``item_text_cache_dir`` (computed once on the CPU with
``item_text_encoder: smollm2``); gpu_prepare.sh and gpu_session.sh say how they travel.
"""

import argparse
import concurrent.futures
import copy
import os
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

#: (model, variant, extra config, label, datasets or None for all) in groups of priority; each group runs on its
#: datasets, every seed, ``--jobs`` at a time.
TEXT = {"item_text_encoder": "smollm2", "item_text_cache_dir": "benchmarks/scratch/item_text"}
#: SASRecAllPos's best of 4 draws on amazon-games and on ml-1m alike (docs/benchmarks.md, "ml-1m on a GPU")
TUNED = {
    "learning_rate": 0.001,
    "hidden_size": 128,
    "n_layers": 1,
    "hidden_dropout_prob": 0.1,
    "attn_dropout_prob": 0.3,
    "inner_size": 512,
}
LONG = {"MAX_ITEM_LIST_LENGTH": 200}
PLANS = {
    # every model at its defaults; then the SmolLM2 title features; then FLR with ids only
    "defaults": [
        [
            ("FLR", "default", {}, "default", None),
            ("FLR", "allpos+backbone", {}, "allpos+backbone", None),
            ("SASRecAllPos", "default", {}, "default", None),
        ],
        [
            ("FLR", "default+llmtext", TEXT, "default+llmtext", None),
            ("SASRecAllPos", "default", TEXT, "default+llmtext", None),
            ("FLR", "allpos+backbone+llmtext", TEXT, "allpos+backbone+llmtext", None),
        ],
        [("FLR", "allpos+notext", {}, "allpos+notext", None)],
    ],
    # issue 14's targets: FLR's default and its backbone alone against a tuned SASRecAllPos (amazon-games's FLR rows
    # are converged on the CPU already, so there only the tuned baseline)
    "tuned": [
        [
            ("FLR", "default", {}, "default", ("ml-1m",)),
            ("FLR", "backbone", {}, "backbone", ("ml-1m",)),
            ("SASRecAllPos", "default", TUNED, "tuned", None),
        ],
    ],
    # what the first "tuned" call (2026-11-30) left out: SASRecAllPos's defaults on ml-1m (the tuning's other
    # candidate: a draw picked on budget-cut runs may lose to the defaults once both converge), FLR with ids only
    "followup": [
        [("SASRecAllPos", "default", {}, "default", ("ml-1m",)), ("FLR", "notext", {}, "notext", ("amazon-games",))],
    ],
    # issue 17's table on a titled dataset whose FLR default, backbone and SASRecAllPos ids rows exist (ml-1m: the
    # "tuned" and "followup" calls): FLR with ids only and with SmolLM2 features, SASRecAllPos with SmolLM2 features
    "text": [
        [
            ("FLR", "default+llmtext", TEXT, "default+llmtext", None),
            ("FLR", "notext", {}, "notext", None),
            ("SASRecAllPos", "default", TEXT, "default+llmtext", None),
        ],
    ],
    # issue 14's probe of a longer history (ml-100k, 2026-12-07, "a longer history"): at 200 items FLR is 1.02x its
    # backbone alone, one factor and a 3-layer backbone alike, within the noise of 943 users. ml-1m (165 interactions
    # per user, 6,040 users) settles it: FLR's default (SFT only) and its backbone alone at history 200, then at 50
    "length": [
        [
            ("FLR", "allpos+latentstate", LONG, "allpos+latentstate@len200", ("ml-1m",)),
            ("FLR", "allpos+backbone", LONG, "allpos+backbone@len200", ("ml-1m",)),
        ],
        [
            ("FLR", "allpos+latentstate", {}, "allpos+latentstate@len50", ("ml-1m",)),
            ("FLR", "allpos+backbone", {}, "allpos+backbone@len50", ("ml-1m",)),
        ],
    ],
}


def plan_runs(plan, datasets, seeds, text_datasets=None):
    r"""The runs of ``PLANS[plan]`` in order of priority: (dataset, model, variant, extra, label, seed); a run that
    reads item text features only on ``text_datasets`` (default: all), a run restricted to some datasets only there."""
    text = datasets if text_datasets is None else text_datasets
    return [
        (d, model, variant, extra, label, s)
        for group in PLANS[plan]
        for d in datasets
        for model, variant, extra, label, only in group
        if (d in text or "item_text_encoder" not in extra) and (only is None or d in only)
        for s in seeds
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deadline", type=float, default=540, help="seconds from start by which every run ends")
    parser.add_argument(
        "--jobs",
        type=int,
        default=12,
        help="runs side by side (with CUDA MPS, as gpu_session.sh starts it, 12 kept one H200 at 55-89 %%)",
    )
    parser.add_argument("--plan", choices=sorted(PLANS), default="defaults", help="which runs (PLANS)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    parser.add_argument("--datasets", nargs="+", default=["amazon-games", "ml-1m"])
    parser.add_argument("--text_datasets", nargs="+", default=None, help="the llmtext runs' datasets (default: all)")
    parser.add_argument("--data_path", default="../shared/datasets")
    parser.add_argument(
        "--tag", required=True, help="results go to compare-<dataset><tag>.* (a new tag per call: rows are appended)"
    )
    parser.add_argument(
        "--overhead", type=float, default=90, help="seconds a run needs besides training (load, build, test; a guess)"
    )
    parser.add_argument("--min_budget", type=float, default=60, help="a run left less training time is not started")
    parser.add_argument("--config", nargs="*", default=[], help="key=value for every run (YAML values)")
    parser.add_argument("--out", default=None, help="a folder that gets a copy of the results after each row")
    parser.add_argument("--dry_run", action="store_true")
    args = parser.parse_args(argv)
    start = time.time()
    runs = plan_runs(args.plan, args.datasets, args.seeds, args.text_datasets)
    if args.dry_run:
        for run in runs:
            print(*run)
        return 0
    base = compare.parse_args(
        ["--data_path", args.data_path, "--threads", "1", f"--results_tag={args.tag}", "--config", *args.config]
    )
    meta = compare.run_meta(base, f"per run: what the {args.deadline:.0f} s deadline left at its start")
    lock = threading.Lock()

    def one(run):
        dataset, model, variant, extra, label, seed = run
        budget = int(args.deadline - (time.time() - start) - args.overhead)
        if budget < args.min_budget:
            print(f"[confirm] skipped {model} {label} {dataset} {seed}: {budget} s left", flush=True)
            return None
        run_args = copy.copy(base)
        run_args.time_budget = budget
        run_args.scratch = os.path.join(
            compare.ROOT, "benchmarks", "scratch", f"confirm-{dataset}-{model}-{label}-{seed}"
        )
        row = compare.run_one(run_args, model, dataset, seed, variant, extra, label=label)
        with lock:
            try:
                compare.record(dataset + args.tag, row, meta, fresh=False)  # the JSON first, then the tables
            except Exception as error:  # a report bug must not keep finished rows from --out
                print(f"[confirm] report failed after the row was saved: {error!r}", flush=True)
            if args.out:  # this dataset's results file, replaced whole
                name = f"compare-{dataset}{args.tag}.json"
                os.makedirs(args.out, exist_ok=True)
                shutil.copy(os.path.join(compare.RESULTS, name), os.path.join(args.out, name + ".part"))
                os.replace(os.path.join(args.out, name + ".part"), os.path.join(args.out, name))
        return row

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        rows = [row for row in pool.map(one, runs) if row]
    failed = [r for r in rows if "error" in r]
    print(f"[confirm] {len(rows)} runs in {time.time() - start:.0f} s, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
