r"""FLR's default, its backbone-alone control and SASRecAllPos on the large datasets, in one call of a lent GPU
machine: the runs of a plan (``PLANS``) go ``--jobs`` at a time (one torch thread each, the GPU shared), most
important first, each with a training budget that ends it before ``--deadline`` (a run that converges earlier is
not cut; a cut run is marked ``cut`` in the tables, a hint and not a result).

Every run is its own ``python benchmarks/compare.py --models M --datasets D --seeds S --variants V --time_budget B
--threads 1 --append --results_tag=<tag> --scratch <its own> --data_path ... [--label_suffix=...] [--config ...]``
(the same protocol and records as any compare.py run; ``--append`` takes the results file's lock, so runs side by
side add their rows safely): each row goes to ``benchmarks/results/compare-<dataset><tag>.json`` as it finishes, and
``--out`` gets a copy of that file after each run, so a call that is stopped early still returns what finished. A plan
row's extra config goes through ``--config`` (after this script's own ``--config``, so the row's wins).

A row's label is its variant and its suffix (``--label_suffix``): ``default+llmtext`` for SASRecAllPos with SmolLM2
features, ``allpos+backbone@len200``. compare.py labels every model but FLR ``default`` + suffix, so SASRecAllPos's
tuned draw now reads ``default-tuned`` (the 2026-11-30 calls, which ran compare.py's functions in this process, wrote
``tuned``: merge the two by hand if both are in one file).

    bash benchmarks/research/gpu_prepare.sh    # here: wheels, datasets and feature caches into .whl/ and .devcarry/
    DEADLINE=540 bash benchmarks/research/gpu_session.sh --tag=-h200-1130   # a device call, carry .devcarry, .whl
    python benchmarks/research/gpu_confirm.py --dry_run --tag=-x           # the plan, in order, with its commands
    python benchmarks/compare.py --report_only --datasets amazon-games --results_tag=-h200-1130   # back here

The ``llmtext`` rows read SmolLM2 title features from ``item_text_cache_dir`` (computed once on the CPU with
``item_text_encoder: smollm2``); gpu_prepare.sh and gpu_session.sh say how they travel. Each run's compare.py process
imports the package before its worker starts (a few seconds, in ``--overhead``).
"""

import argparse
import concurrent.futures
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
from common import RESULTS, ROOT, SCRATCH, foreign_setting, read_settings, settings_pairs  # noqa: E402

COMPARE = os.path.join(ROOT, "benchmarks", "compare.py")
clock = time.monotonic  # the deadline's clock (the tests replace it)

TEXT = {"item_text_encoder": "smollm2", "item_text_cache_dir": "benchmarks/scratch/item_text"}
#: SASRecAllPos's best of 4 draws on amazon-games and on ml-1m alike (docs/research_log.md, "ml-1m on a GPU")
TUNED = {
    "learning_rate": 0.001,
    "hidden_size": 128,
    "n_layers": 1,
    "hidden_dropout_prob": 0.1,
    "attn_dropout_prob": 0.3,
    "inner_size": 512,
}
LONG = {"MAX_ITEM_LIST_LENGTH": 200}
#: (model, variant, extra config, label suffix, datasets or None for all) in groups of priority; each group runs on its
#: datasets, every seed, ``--jobs`` at a time. compare.py runs a model other than FLR as variant ``default`` only.
PLANS = {
    # every model at its defaults; then the SmolLM2 title features; then FLR with ids only
    "defaults": [
        [
            ("FLR", "default", {}, "", None),
            ("FLR", "allpos+backbone", {}, "", None),
            ("SASRecAllPos", "default", {}, "", None),
        ],
        [
            ("FLR", "default+llmtext", TEXT, "", None),
            ("SASRecAllPos", "default", TEXT, "+llmtext", None),
            ("FLR", "allpos+backbone+llmtext", TEXT, "", None),
        ],
        [("FLR", "allpos+notext", {}, "", None)],
    ],
    # issue 14's targets: FLR's default and its backbone alone against a tuned SASRecAllPos (amazon-games's FLR rows
    # are converged on the CPU already, so there only the tuned baseline)
    "tuned": [
        [
            ("FLR", "default", {}, "", ("ml-1m",)),
            ("FLR", "backbone", {}, "", ("ml-1m",)),
            ("SASRecAllPos", "default", TUNED, "-tuned", None),
        ],
    ],
    # what the first "tuned" call (2026-11-30) left out: SASRecAllPos's defaults on ml-1m (the tuning's other
    # candidate: a draw picked on budget-cut runs may lose to the defaults once both converge), FLR with ids only
    "followup": [
        [("SASRecAllPos", "default", {}, "", ("ml-1m",)), ("FLR", "notext", {}, "", ("amazon-games",))],
    ],
    # issue 17's table on a titled dataset whose FLR default, backbone and SASRecAllPos ids rows exist (ml-1m: the
    # "tuned" and "followup" calls): FLR with ids only and with SmolLM2 features, SASRecAllPos with SmolLM2 features
    "text": [
        [
            ("FLR", "default+llmtext", TEXT, "", None),
            ("FLR", "notext", {}, "", None),
            ("SASRecAllPos", "default", TEXT, "+llmtext", None),
        ],
    ],
    # issue 14's probe of a longer history (ml-100k, 2026-12-07, "a longer history"): at 200 items FLR is 1.02x its
    # backbone alone, one factor and a 3-layer backbone alike, within the noise of 943 users. ml-1m (165 interactions
    # per user, 6,040 users) settles it: FLR's default (SFT only) and its backbone alone at history 200, then at 50
    "length": [
        [
            ("FLR", "allpos+latentstate", LONG, "@len200", ("ml-1m",)),
            ("FLR", "allpos+backbone", LONG, "@len200", ("ml-1m",)),
        ],
        [
            ("FLR", "allpos+latentstate", {}, "@len50", ("ml-1m",)),
            ("FLR", "allpos+backbone", {}, "@len50", ("ml-1m",)),
        ],
    ],
}


def plan_runs(plan, datasets, seeds, text_datasets=None):
    r"""The runs of ``PLANS[plan]`` in order of priority: (dataset, model, variant, extra, suffix, seed); a run that
    reads item text features only on ``text_datasets`` (default: all), a run restricted to some datasets only there."""
    text = datasets if text_datasets is None else text_datasets
    return [
        (d, model, variant, extra, suffix, s)
        for group in PLANS[plan]
        for d in datasets
        for model, variant, extra, suffix, only in group
        if (d in text or "item_text_encoder" not in extra) and (only is None or d in only)
        for s in seeds
    ]


def compare_command(args, run, budget):
    r"""The compare.py command of one planned run with ``budget`` seconds of training."""
    dataset, model, variant, extra, suffix, seed = run
    scratch = os.path.join(SCRATCH, f"confirm-{dataset}-{model}-{variant}{suffix}-{seed}")
    command = [sys.executable, COMPARE, "--models", model, "--datasets", dataset, "--seeds", str(seed)]
    command += ["--variants", variant, "--time_budget", str(budget), "--threads", "1", "--append"]
    command += [f"--results_tag={args.tag}", "--scratch", scratch, "--data_path", args.data_path]
    command += [f"--label_suffix={suffix}"] if suffix else []  # "=": a suffix may begin with "-"
    pairs = args.config + settings_pairs(extra)
    return command + (["--config", *pairs] if pairs else [])


def copy_results(dataset, tag, out):
    r"""``--out``: the dataset's results file, copied under the lock that compare.py's ``record`` writes it under, then
    put in place whole (a copy that is stopped halfway leaves a ``.part``, never a broken file)."""
    name = f"compare-{dataset}{tag}.json"
    source, target = os.path.join(RESULTS, name), os.path.join(out, name)
    if not os.path.exists(source):  # no row yet (the run failed before its first)
        return
    os.makedirs(out, exist_ok=True)
    with open(source + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.copy(source, target + ".part")
        os.replace(target + ".part", target)


def check_config(args, runs):
    r"""Refuse, before any run, a ``--config`` key that one of the plan's models does not read (compare.py would refuse
    each of that model's runs: ``grpo_epochs`` for SASRecAllPos)."""
    problem = foreign_setting([run[1] for run in runs], read_settings(args.config, "--config"))
    if problem:
        raise SystemExit(problem)


def run_one(args, run, start):
    r"""One planned run with what the deadline leaves it (None: skipped); True if it failed. Its output is printed as
    it comes."""
    dataset, model, variant, _, suffix, seed = run
    budget = int(args.deadline - (clock() - start) - args.overhead)
    if budget < args.min_budget:
        print(f"[confirm] skipped {model} {variant}{suffix} {dataset} {seed}: {budget} s left", flush=True)
        return None
    command = compare_command(args, run, budget)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    failed = False
    with proc.stdout:
        for line in proc.stdout:
            print(line, end="", flush=True)
            failed = failed or line.startswith("[compare]   failed")  # compare.py's line for a run with an error
    failed = proc.wait() != 0 or failed
    if args.out:
        copy_results(dataset, args.tag, args.out)
    return failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--deadline", type=float, default=540, help="seconds from start by which every run ends")
    # with CUDA MPS, as gpu_session.sh starts it, 12 runs kept one H200 at 55-89 %
    add("--jobs", type=int, default=12, help="runs side by side (12 with MPS on an H200)")
    add("--plan", choices=sorted(PLANS), default="defaults", help="which runs (PLANS)")
    add("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    add("--datasets", nargs="+", default=["amazon-games", "ml-1m"])
    add("--text_datasets", nargs="+", default=None, help="the llmtext runs' datasets (default: all)")
    add("--data_path", default="../shared/datasets")
    add("--tag", required=True, help="results go to compare-<dataset><tag>.* (a new tag per call: rows are appended)")
    add("--overhead", type=float, default=90, help="seconds a run needs besides training (load, build, test; a guess)")
    add("--min_budget", type=float, default=60, help="a run left less training time is not started")
    add("--config", nargs="*", default=[], help="key=value for every run (YAML values)")
    add("--out", default=None, help="a folder that gets a copy of the results after each run")
    add("--dry_run", action="store_true", help="print the plan's commands (budgets as if now)")
    args = parser.parse_args(argv)
    start = clock()
    runs = plan_runs(args.plan, args.datasets, args.seeds, args.text_datasets)
    check_config(args, runs)
    if args.dry_run:
        for run in runs:
            print(shlex.join(compare_command(args, run, int(args.deadline - args.overhead))))
        return 0
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = [r for r in pool.map(lambda run: run_one(args, run, start), runs) if r is not None]
    print(f"[confirm] {len(results)} runs in {clock() - start:.0f} s, {sum(results)} failed", flush=True)
    return 1 if any(results) else 0


if __name__ == "__main__":
    sys.exit(main())
