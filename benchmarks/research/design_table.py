r"""Issue 14's table: every design tried for FLR's factors, each against FLR's own backbone-alone control.

Reads the per-run results that ``benchmarks/compare.py`` wrote (``benchmarks/results/compare-<tag>.json``) and, for each
row of :data:`ROWS`, computes over the seeds of that design and of its control (the same file unless the row says
otherwise, trained the same way): test NDCG@10 and Recall@10 (mean ± sample std), the best epoch, seconds per epoch,
how many runs a time budget cut, and the ratio of the two mean test NDCG@10 with whether the mean ± std intervals are
apart. Prints the Markdown table and writes ``benchmarks/results/design_table.{json,md}``. Nothing is typed in by hand
but which run is which design (:data:`ROWS`); the sections of docs/research_log.md named in each row hold the protocol.

    python benchmarks/research/design_table.py
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
from common import RESULTS, mean_std  # noqa: E402

#: (dataset, design, (compare file tag, variant), (file tag, variant) of its control, section of docs/research_log.md);
#: the control is FLR's backbone alone (pass 1's last state, no latent module) with the same inputs and head settings
_MINI_BACKBONE = ("amazon-games-mini", "allpos+backbone@noproj")
_MINI_BACKBONE_PROJ = ("amazon-games-mini", "allpos+backbone")
ROWS = [
    (
        "amazon-games-mini",
        "FLR default (latent state, K = 4, T = 2)",
        ("amazon-games-mini", "allpos+latentstate@noproj"),
        _MINI_BACKBONE,
        "The same tuning budget ...",
    ),
    (
        "amazon-games-mini",
        "same, after the real-positions latent module (2026-11-30)",
        ("amazon-games-mini-fastlatent", "allpos+latentstate"),
        _MINI_BACKBONE,
        "The latent module at the real positions",
    ),
    (
        "amazon-games-mini",
        "both tuned, same budget (FLR: defaults; backbone: draw 3)",
        ("amazon-games-mini", "allpos+latentstate@noproj"),
        ("amazon-games-mini", "allpos+backbone-bestdraw@noproj"),
        "The same tuning budget ...",
    ),
    (
        "amazon-games-mini",
        "paper head: thought through pass 2",
        ("amazon-games-mini", "allpos@noproj"),
        _MINI_BACKBONE,
        "Does FLR's reasoning earn its place?",
    ),
    (
        "amazon-games-mini",
        "paper head with the user projection (old default)",
        ("amazon-games-mini", "allpos"),
        _MINI_BACKBONE_PROJ,
        "Does FLR's reasoning earn its place?",
    ),
    (
        "amazon-games-mini",
        "constant learned thought (pass 2, projection)",
        ("amazon-games-mini", "allpos+constthought"),
        _MINI_BACKBONE_PROJ,
        "Does FLR's reasoning earn its place?",
    ),
    (
        "amazon-games-mini",
        "mixture of the K factors' softmaxes",
        ("amazon-games-mini", "allpos+mixture@noproj"),
        _MINI_BACKBONE,
        "Does FLR's reasoning earn its place?",
    ),
    (
        "amazon-games-mini",
        "each item by its best factor (multi-interest)",
        ("amazon-games-mini", "allpos+maxfactor@noproj"),
        _MINI_BACKBONE,
        "Multi-interest scoring",
    ),
    (
        "amazon-games-mini",
        "same, rerun 2026-12-07 (today's code, same seeds)",
        ("amazon-games-mini-fut1", "allpos+maxfactor"),
        ("amazon-games-mini-fut1", "allpos+backbone"),
        "A future-window loss",
    ),
    (
        "amazon-games-mini",
        "one refinement step (T = 1)",
        ("amazon-games-mini", "allpos+latentstate@T1"),
        _MINI_BACKBONE,
        "The same tuning budget ...",
    ),
    (
        "amazon-games-mini",
        "four refinement steps (T = 4)",
        ("amazon-games-mini", "allpos+latentstate@T4"),
        _MINI_BACKBONE,
        "The same tuning budget ...",
    ),
    (
        "amazon-games-mini",
        "regularisers off",
        ("amazon-games-mini-fastlatent", "allpos+latentstate+noreg"),
        _MINI_BACKBONE,
        "Three more looks at the factors",
    ),
    (
        "amazon-games-mini",
        "position-aware factor attention",
        ("amazon-games-mini", "allpos+latentstate+recency"),
        _MINI_BACKBONE,
        "Two more designs for the factors",
    ),
    (
        "amazon-games-mini",
        "ReaRec reasoning tokens (on the latent state)",
        ("amazon-games-mini-rearec", "allpos+rearec"),
        _MINI_BACKBONE,
        "ReaRec-style reasoning tokens",
    ),
    (
        "amazon-games-mini",
        "RecBole's SASRec encoder as the backbone",
        ("amazon-games-mini", "allpos+sasrec+latentstate"),
        ("amazon-games-mini", "allpos+sasrec+backbone"),
        "Does FLR's reasoning earn its place?",
    ),
    (
        "amazon-games-mini",
        "SmolLM2 title features",
        ("amazon-games-mini", "allpos+latentstate+llmtext"),
        ("amazon-games-mini", "allpos+backbone+llmtext"),
        "What the language model adds",
    ),
    (
        "amazon-games-mini",
        "future-window loss, w = 1 (both arms)",
        ("amazon-games-mini-fut3", "allpos+latentstate"),
        ("amazon-games-mini-fut3", "allpos+backbone"),
        "A future-window loss",
    ),
    (
        "amazon-games-mini",
        "future-window loss, w = 1, best factor",
        ("amazon-games-mini-fut3", "allpos+maxfactor"),
        ("amazon-games-mini-fut3", "allpos+backbone"),
        "A future-window loss",
    ),
    (
        "amazon-games-mini",
        "future-window loss, w = 0.25, best factor",
        ("amazon-games-mini-fut3w025", "allpos+maxfactor"),
        ("amazon-games-mini-fut3w025", "allpos+backbone"),
        "A future-window loss",
    ),
    (
        "amazon-games",
        "FLR default (SFT, then GRPO at lr 1e-4)",
        ("amazon-games", "default"),
        ("amazon-games", "backbone"),
        "amazon-games converged: FLR against its backbone alone",
    ),
    (
        "ml-100k",
        "FLR default, SmolLM2 title features (6 seeds)",
        ("ml-100k", "allpos+latentstate+llmtext@1129"),
        ("ml-100k", "allpos+backbone+llmtext@1129"),
        "ml-100k: the same questions",
    ),
    (
        "ml-100k",
        "both tuned, same budget, SmolLM2 features",
        ("ml-100k", "allpos+latentstate+llmtext-tuned@noproj"),
        ("ml-100k", "allpos+backbone+llmtext-tuned@noproj"),
        "ml-100k, the same tuning budget",
    ),
    (
        "ml-100k",
        "one factor (K = 1), SmolLM2 features",
        ("ml-100k", "allpos+latentstate+llmtext+K1@1129"),
        ("ml-100k", "allpos+backbone+llmtext@1129"),
        "ml-100k: the same questions",
    ),
    (
        "ml-100k",
        "eight factors (K = 8), SmolLM2 features",
        ("ml-100k", "allpos+latentstate+llmtext+K8@1129"),
        ("ml-100k", "allpos+backbone+llmtext@1129"),
        "Two more designs for the factors",
    ),
    (
        "ml-100k",
        "position-aware factor attention, SmolLM2 features",
        ("ml-100k", "allpos+latentstate+llmtext+recency@1129"),
        ("ml-100k", "allpos+backbone+llmtext@1129"),
        "Two more designs for the factors",
    ),
    (
        "ml-100k",
        "each item by its best factor, bag of words",
        ("ml-100k", "allpos+maxfactor@1130"),
        ("ml-100k", "allpos+backbone@1129"),
        "Multi-interest scoring",
    ),
    (
        "ml-100k",
        "FLR default, bag of words, history 50 (RecBole's default)",
        ("ml-100k-len50", "allpos+latentstate"),
        ("ml-100k-len50", "allpos+backbone"),
        "ml-100k: a longer history",
    ),
    (
        "ml-100k",
        "same, history 200 (6 seeds)",
        ("ml-100k-len200", "allpos+latentstate"),
        ("ml-100k-len200", "allpos+backbone"),
        "ml-100k: a longer history",
    ),
    (
        "ml-100k",
        "one factor (K = 1), history 200 (6 seeds)",
        ("ml-100k-len200", "allpos+latentstate+K1"),
        ("ml-100k-len200", "allpos+backbone"),
        "ml-100k: a longer history",
    ),
    (
        "ml-100k",
        "FLR default, history 200, against a 3-layer backbone alone",
        ("ml-100k-len200", "allpos+latentstate"),
        ("ml-100k-len200-3layers", "allpos+backbone"),
        "ml-100k: a longer history",
    ),
    (
        "amazon-instruments",
        "FLR default (SFT, then GRPO), ids only",
        ("amazon-instruments-conv", "default"),
        ("amazon-instruments-conv", "backbone"),
        "amazon-instruments converged",
    ),
    (
        "amazon-instruments",
        "FLR default, against a 3-layer backbone alone",
        ("amazon-instruments-conv", "default"),
        ("amazon-instruments-conv-3layers", "backbone"),
        "amazon-instruments converged",
    ),
    (
        "amazon-instruments",
        "one factor (K = 1), ids only",
        ("amazon-instruments-conv-k1", "default"),
        ("amazon-instruments-conv", "backbone"),
        "amazon-instruments converged",
    ),
    (
        "amazon-instruments",
        "FLR default on 3 layers, against a 3-layer backbone alone",
        ("amazon-instruments-conv-3layers", "default"),
        ("amazon-instruments-conv-3layers", "backbone"),
        "amazon-instruments converged",
    ),
    (
        "amazon-instruments",
        "FLR default on 3 layers, against a 4-layer backbone alone",
        ("amazon-instruments-conv-3layers", "default"),
        ("amazon-instruments-conv-4layers", "backbone"),
        "amazon-instruments converged",
    ),
    (
        "ml-1m (H200)",
        "FLR default (SFT, then GRPO)",
        ("ml-1m-h200-mps", "default"),
        ("ml-1m-h200-mps", "backbone"),
        "ml-1m converged on an H200",
    ),
]


def _runs(tag, variant, cache, results):
    if tag not in cache:
        with open(os.path.join(results, f"compare-{tag}.json")) as f:
            cache[tag] = json.load(f)["runs"]
    runs = [r for r in cache[tag] if r["model"] == "FLR" and r["variant"] == variant]
    if not runs:
        raise SystemExit(f"compare-{tag}.json has no FLR run of variant {variant!r}")
    return runs


def summarise(runs):
    r"""Mean and sample std (0 for one run) of a design's runs, with its seeds, cut runs, best epoch and s/epoch."""

    ndcg = mean_std([r["test_result"]["ndcg@10"] for r in runs])
    recall = mean_std([r["test_result"]["recall@10"] for r in runs])
    return {
        "seeds": [r["seed"] for r in runs],
        "cut": sum(bool(r.get("cut")) for r in runs),
        "ndcg@10": ndcg,
        "recall@10": recall,
        "best_epoch": statistics.mean(r["best_epoch"] for r in runs),
        "epoch_s": statistics.mean(r["epoch_s"] for r in runs),
    }


def compare(design, control):
    r"""The ratio of the mean test NDCG@10s and whether the mean ± std intervals are apart."""
    (m1, s1), (m2, s2) = design["ndcg@10"], control["ndcg@10"]
    return {"ratio": m1 / m2, "apart": m1 - s1 > m2 + s2 or m1 + s1 < m2 - s2}


def build(rows=ROWS, results=RESULTS):
    r"""One entry per row: both arms' summaries (:func:`summarise`) and :func:`compare`'s verdict."""
    cache, table = {}, []
    for dataset, design, (tag, variant), (control_tag, control_variant), section in rows:
        a = summarise(_runs(tag, variant, cache, results))
        b = summarise(_runs(control_tag, control_variant, cache, results))
        table.append(
            {
                "dataset": dataset,
                "design": design,
                "file": f"compare-{tag}.json",
                "variant": variant,
                "control": f"compare-{control_tag}.json: {control_variant}",
                "section": section,
                "flr": a,
                "backbone": b,
                **compare(a, b),
            }
        )
    return table


def _cell(summary):
    (m, s), cut = summary["ndcg@10"], summary["cut"]
    return f"{m:.4f} ± {s:.4f} ({len(summary['seeds'])}{f', {cut} cut' if cut else ''})"


def markdown(table):
    lines = [
        "| dataset | design | FLR: test NDCG@10 (seeds) | Recall@10 | best epoch | s/epoch | backbone alone | "
        "s/epoch | FLR / backbone | apart? |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        a, b = row["flr"], row["backbone"]
        lines.append(
            f"| {row['dataset']} | {row['design']} | {_cell(a)} | {a['recall@10'][0]:.4f} | {a['best_epoch']:.1f} | "
            f"{a['epoch_s']:.1f} | {_cell(b)} | {b['epoch_s']:.1f} | {row['ratio']:.3f}x | "
            f"{'yes' if row['apart'] else 'no'} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(RESULTS, "design_table"), help="path without extension")
    args = parser.parse_args()
    table = build()
    text = markdown(table)
    print(text)
    with open(args.out + ".json", "w") as f:
        json.dump({"command": "python benchmarks/research/design_table.py", "rows": table}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
