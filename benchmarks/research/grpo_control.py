r"""Is GRPO's gain over SFT the reward's, or what picking the best GRPO epoch on valid gives anyway?

Collects, for one dataset, every GRPO stage started from a converged SFT checkpoint, with the real reward and with
``grpo_reward: random`` (the control: the same stage, the same epoch selection on valid, a reward that carries no
signal), and prints and writes the table: each (SFT seed, GRPO seed) cell's valid and test NDCG@10 against its SFT
checkpoint, and per arm and reward how often GRPO beat SFT and by how much on test.

Two sources per arm (``--arms name=variant``, or ``name`` for GRPO-only stages alone):

- the full runs in ``compare-<dataset>.json`` of FLR ``variant`` (SFT then GRPO, GRPO seed = the run's seed): the
  real reward;
- ``grpo_quality-<dataset>-<name>-<reward>-<SFT seed>[-g<k>].json``: GRPO-only stages from those runs' SFT weights
  (``grpo_quality.py --sft_checkpoint <best>.pth:sft --results_tag=-<name>-<reward>-<SFT seed>[-g<k>]``), ``reward``
  ``real`` or ``random``.

    python benchmarks/research/grpo_control.py --dataset amazon-games --arms words=default llm=default+llmtext

writes benchmarks/results/grpo_control-<dataset><results_tag>.{json,md} (refusing to replace a file of that name that
this script did not write).
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
from common import RESULTS  # noqa: E402

METRIC = "ndcg@10"


def full_runs(dataset, arm, variant):
    r"""The real-reward cells of the full FLR runs of ``variant`` (converged, both stages recorded)."""
    path = os.path.join(RESULTS, f"compare-{dataset}.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        runs = json.load(f)["runs"]
    return [
        dict(
            arm=arm,
            reward="real",
            sft_seed=r["seed"],
            grpo_seed=r["seed"],
            source=r["command"],
            sft_valid=r["sft_valid_result"][METRIC],
            sft_test=r["sft_test_result"][METRIC],
            valid=r["best_valid_score"],
            test=r["test_result"][METRIC],
        )
        for r in runs
        if r["model"] == "FLR" and r["variant"] == variant and not r["cut"] and r.get("sft_test_result")
    ]


def grpo_only_runs(dataset, arm):
    r"""The cells of ``grpo_quality`` files tagged ``-<arm>-<reward>-<SFT seed>[-g<k>]``."""
    pattern = re.compile(rf"grpo_quality-{re.escape(dataset)}-{re.escape(arm)}-(real|random)-(\d+)(-g\d+)?\.json$")
    cells = []
    for path in sorted(glob.glob(os.path.join(RESULTS, f"grpo_quality-{dataset}-{arm}-*.json"))):
        match = pattern.search(path)
        if not match:
            continue
        with open(path) as f:
            result = json.load(f)
        for run in result["runs"]:
            cells.append(
                dict(
                    arm=arm,
                    reward=match.group(1),
                    sft_seed=int(match.group(2)),
                    grpo_seed=run["seed"],
                    source=result["command"],
                    sft_valid=run["sft_valid"],
                    sft_test=run["sft_test"],
                    valid=run["best_valid"],
                    test=run["test"],
                )
            )
    return cells


def summarise(cells):
    r"""Per (arm, reward): runs, how many beat SFT on valid (strictly: a tie keeps SFT) and on valid and test, and
    the test change in % (mean, sample std, min, max)."""
    groups = {}
    for cell in cells:
        groups.setdefault((cell["arm"], cell["reward"]), []).append(cell)
    summary = []
    for (arm, reward), group in sorted(groups.items()):
        gains = [100 * (c["test"] / c["sft_test"] - 1) for c in group]
        summary.append(
            dict(
                arm=arm,
                reward=reward,
                runs=len(group),
                sft_seeds=len({c["sft_seed"] for c in group}),
                valid_above=sum(c["valid"] > c["sft_valid"] for c in group),
                both_above=sum(c["valid"] > c["sft_valid"] and c["test"] > c["sft_test"] for c in group),
                valid_gain_mean=statistics.mean(c["valid"] - c["sft_valid"] for c in group),
                test_gain_pct_mean=statistics.mean(gains),
                test_gain_pct_std=statistics.stdev(gains) if len(gains) > 1 else 0.0,
                test_gain_pct_min=min(gains),
                test_gain_pct_max=max(gains),
            )
        )
    return summary


def paired(cells):
    r"""Per arm, the real and the random reward from the same SFT weights and GRPO seed: how often the real reward's
    test NDCG@10 is higher, and the mean difference of the two test changes (percentage points)."""
    by_key = {(c["arm"], c["sft_seed"], c["grpo_seed"], c["reward"]): c for c in cells}
    pairs = {}
    for (arm, sft_seed, grpo_seed, reward), real in by_key.items():
        random = by_key.get((arm, sft_seed, grpo_seed, "random"))
        if reward == "real" and random is not None:
            pairs.setdefault(arm, []).append((real, random))
    return [
        dict(
            arm=arm,
            pairs=len(group),
            real_higher=sum(r["test"] > c["test"] for r, c in group),
            random_higher=sum(r["test"] < c["test"] for r, c in group),
            test_pp_mean=statistics.mean(100 * (r["test"] - c["test"]) / r["sft_test"] for r, c in group),
        )
        for arm, group in sorted(pairs.items())
    ]


def markdown(dataset, cells, summary, pairs, command):
    lines = [
        f"### {dataset}: GRPO against a random-reward control",
        "",
        f"Command: `{command}`",
        "",
        "| arm | reward | runs (SFT seeds) | valid above SFT | valid and test above SFT | mean valid gain "
        "| test change, % (mean ± std, min, max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['arm']} | {s['reward']} | {s['runs']} ({s['sft_seeds']}) | {s['valid_above']} of {s['runs']} | "
            f"{s['both_above']} of {s['runs']} | {s['valid_gain_mean']:+.4f} | {s['test_gain_pct_mean']:+.1f} ± "
            f"{s['test_gain_pct_std']:.1f} ({s['test_gain_pct_min']:+.1f}, {s['test_gain_pct_max']:+.1f}) |"
        )
    if pairs:
        lines += [
            "",
            "| arm | real vs random, same SFT weights and GRPO seed | real higher on test | random higher "
            "| mean test difference, % of SFT |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['arm']} | {p['pairs']} pairs | {p['real_higher']} | {p['random_higher']} | "
            f"{p['test_pp_mean']:+.1f} |"
            for p in pairs
        ]
    lines += [
        "",
        "| arm | SFT seed | GRPO seed | reward | SFT valid / test | GRPO valid / test | test change |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in sorted(cells, key=lambda c: (c["arm"], c["sft_seed"], c["reward"], c["grpo_seed"] != c["sft_seed"])):
        lines.append(
            f"| {c['arm']} | {c['sft_seed']} | {c['grpo_seed']} | {c['reward']} | {c['sft_valid']:.4f} / "
            f"{c['sft_test']:.4f} | {c['valid']:.4f} / {c['test']:.4f} | "
            f"{100 * (c['test'] / c['sft_test'] - 1):+.1f} % |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument(
        "--arms",
        nargs="+",
        required=True,
        help="name[=variant]: grpo_quality tags -<name>-..., and the FLR runs of variant in compare-<dataset>.json",
    )
    parser.add_argument("--results_tag", default="", help="suffix of the output files, e.g. -lr3e-5")
    args = parser.parse_args(argv)
    name = os.path.join(RESULTS, f"grpo_control-{args.dataset}{args.results_tag}")
    if os.path.isfile(name + ".json"):
        with open(name + ".json") as f:
            if "cells" not in json.load(f):  # the earlier, hand-assembled control files: never overwritten
                parser.error(f"{name}.json was not written by this script; choose another --results_tag")
    cells = []
    for spec in args.arms:
        arm, _, variant = spec.partition("=")
        cells += (full_runs(args.dataset, arm, variant) if variant else []) + grpo_only_runs(args.dataset, arm)
    if not cells:
        parser.error(f"no GRPO runs found for {args.arms} on {args.dataset} in {RESULTS}")
    summary, pairs = summarise(cells), paired(cells)
    command = "python benchmarks/research/grpo_control.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(args.dataset, cells, summary, pairs, command)
    print(text)
    with open(name + ".json", "w") as f:
        result = dict(command=command, dataset=args.dataset, metric=METRIC, summary=summary, pairs=pairs, cells=cells)
        json.dump(result, f, indent=1)
    with open(name + ".md", "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
