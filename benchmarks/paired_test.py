r"""Is model A above model B on test beyond the noise of which users are in the test set? A per-user paired test.

Three seeds per model give the spread of training; they say nothing about how much a mean over the test users
moves with the users drawn. This script ranks the test split of each checkpoint in full, as RecBole's evaluator
does (history masked, ``torch.topk``, RecBole's NDCG@k and Recall@k), keeps each user's value, averages it per user
over each group's checkpoints (its seeds), and compares the groups user by user: the mean difference and the ratio
of the means with 95 % bootstrap intervals over users, the users on which each group is better (a sign test), and a
paired t-test. Every checkpoint's own mean is printed beside it: it must equal the run's logged test result.

A checkpoint followed by ``:sft`` is tested with the SFT weights that its run's GRPO-stage last checkpoint
(``<best>-last.pth``) keeps (``grpo_sft_weights``, as in benchmarks/research/sft_test.py): GRPO against its own SFT,
user by user. Every checkpoint must be of the same dataset and split. The same comparison is repeated within bins of
the test users' history length (``--length_bins``: where in the data does A differ from B?). Writes
``benchmarks/results/paired_test-<dataset><tag>.json``. Example (FLR's default against its backbone alone, 3 seeds
each):

    python benchmarks/paired_test.py --a saved/FLR-amazon-games-<a1>.pth <a2> <a3> --b <b1> <b2> <b3> \
        --label_a "FLR default" --label_b "backbone alone" --results_tag=-flr-vs-backbone
"""

import argparse
import json
import os
import platform
import sys

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: common.py
from common import RESULTS, split_sft_suffix, swap_in_sft_weights  # noqa: E402

from recbole_flr.checkpoint import last_checkpoint_file  # noqa: E402
from recbole_flr.quick_start import load_data_and_model  # noqa: E402


def rank_metrics(scores, positive_u, positive_i, k):
    r"""Per-row NDCG@k and Recall@k of full-ranking ``scores`` [B N] (masked items at -inf), with RecBole's maths:
    the top k by ``torch.topk``, DCG over the hits, IDCG over min(positives, k)."""
    pos = torch.zeros_like(scores, dtype=torch.bool)
    pos[positive_u, positive_i] = True
    n_pos = pos.sum(1).clamp(min=1)
    hits = torch.gather(pos, 1, torch.topk(scores, k, dim=-1).indices).double()  # [B k]
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.double))
    idcg = torch.cumsum(discount, 0)[n_pos.clamp(max=k) - 1]
    return (hits * discount).sum(1) / idcg, hits.sum(1) / n_pos


@torch.no_grad()
def per_user(checkpoint, k=10):
    r"""Each test user's NDCG@k and Recall@k under ``checkpoint`` (``path`` or ``path:sft``).

    Returns:
        dict: ``users`` (ids, sorted), ``ndcg``, ``recall`` and ``length`` (the history length the model read, at most
        the history window; arrays in that order), ``dataset``, ``seed``, ``model``.
    """
    path, sft = split_sft_suffix(checkpoint)
    config, model, dataset, _, _, test_data = load_data_and_model(path)
    if sft:
        swap_in_sft_weights(model, last_checkpoint_file(path))
    model.eval()
    n_items, user_field = dataset.item_num, config["USER_ID_FIELD"]
    users, ndcg, recall, length = [], [], [], []
    for interaction, history_index, positive_u, positive_i in test_data:  # RecBole's full-sort batches
        scores = model.full_sort_predict(interaction.to(config["device"])).view(-1, n_items)
        scores[:, 0] = -np.inf  # the padding item, as RecBole's Trainer._full_sort_batch_eval
        if history_index is not None:
            scores[history_index] = -np.inf
        batch_ndcg, batch_recall = rank_metrics(scores, positive_u, positive_i, k)
        users.append(interaction[user_field].cpu().numpy())
        ndcg.append(batch_ndcg.cpu().numpy())
        recall.append(batch_recall.cpu().numpy())
        length.append(interaction[model.ITEM_SEQ_LEN].cpu().numpy())
    users = np.concatenate(users)
    order = np.argsort(users, kind="stable")
    return {
        "users": users[order],
        "ndcg": np.concatenate(ndcg)[order],
        "recall": np.concatenate(recall)[order],
        "length": np.concatenate(length)[order],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "model": config["model"],
    }


def paired(a, b, n_boot=2000, seed=0, chunk=100):
    r"""A against B, each one value per user (the same users, in the same order).

    Returns:
        dict: ``n_users``, ``mean_a``, ``mean_b``, ``diff`` (mean of a - b), ``ratio`` (mean a / mean b), their 95 %
        bootstrap intervals over users (``diff_ci``, ``ratio_ci``), ``a_better`` / ``b_better`` (users), the
        two-sided sign-test ``sign_p`` and paired t-test ``t_p``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n, rng = len(a), np.random.default_rng(seed)
    sums_a, sums_b = [], []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        sums_a.append(a[idx].sum(1))
        sums_b.append(b[idx].sum(1))
    sums_a, sums_b = np.concatenate(sums_a), np.concatenate(sums_b)
    a_better, b_better = int((a > b).sum()), int((b > a).sum())
    differ, d = a_better + b_better, a - b
    # the t-test is undefined when every user's difference is the same: then p is 0 (a shift) or 1 (none)
    t_p = float(stats.ttest_rel(a, b).pvalue) if np.ptp(d) > 1e-12 else float(d.mean() == 0)
    return {
        "n_users": n,
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "diff": float(d.mean()),
        "diff_ci": [float(x) for x in np.percentile((sums_a - sums_b) / n, [2.5, 97.5])],
        "ratio": float(a.mean() / b.mean()) if b.mean() > 0 else float("nan"),
        "ratio_ci": [float(x) for x in np.percentile(sums_a / np.maximum(sums_b, 1e-12), [2.5, 97.5])],
        "a_better": a_better,
        "b_better": b_better,
        "sign_p": float(stats.binomtest(a_better, differ).pvalue) if differ else 1.0,
        "t_p": t_p,
    }


def by_length(a, b, length, edges, n_boot=2000):
    r""":func:`paired` within bins of the users' history length: bin i holds edges[i] <= length < edges[i + 1] (the
    last bin is open); empty bins are left out.

    Returns:
        list: one dict per bin, ``lengths`` ("5-9", "20+") and :func:`paired`'s fields.
    """
    bins = []
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else None
        keep = (length >= low) & (length < high if high is not None else True)
        if keep.any():
            name = f"{low}+" if high is None else (f"{low}" if high == low + 1 else f"{low}-{high - 1}")
            bins.append({"lengths": name, **paired(np.asarray(a)[keep], np.asarray(b)[keep], n_boot)})
    return bins


def group_mean(rows, label):
    r"""Per-user means over a group's checkpoints (its seeds); every checkpoint must hold the same test users."""
    users = rows[0]["users"]
    for row in rows[1:]:
        if row["dataset"] != rows[0]["dataset"] or not np.array_equal(row["users"], users):
            raise SystemExit(f"group {label}: its checkpoints do not share one dataset's test users.")
    return {metric: np.mean([row[metric] for row in rows], axis=0) for metric in ("ndcg", "recall")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", nargs="+", required=True, help="group A's checkpoints (path or path:sft)")
    parser.add_argument("--b", nargs="+", required=True, help="group B's checkpoints")
    parser.add_argument("--label_a", default="A")
    parser.add_argument("--label_b", default="B")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--n_boot", type=int, default=2000)
    parser.add_argument("--results_tag", default="")
    parser.add_argument("--length_bins", default="1,5,10,20", help="lower edges of the history-length bins")
    args = parser.parse_args()
    edges = [int(x) for x in args.length_bins.split(",")]
    torch.set_num_threads(1)
    groups = {}
    for label, checkpoints in ((args.label_a, args.a), (args.label_b, args.b)):
        rows = []
        for checkpoint in checkpoints:
            row = per_user(checkpoint, args.k)
            row["checkpoint"] = checkpoint
            rows.append(row)
            print(
                json.dumps(
                    {
                        "group": label,
                        "checkpoint": checkpoint,
                        "seed": row["seed"],
                        "users": len(row["users"]),
                        f"ndcg@{args.k}": round(float(row["ndcg"].mean()), 4),
                        f"recall@{args.k}": round(float(row["recall"].mean()), 4),
                    }
                )
            )
        groups[label] = rows
    a, b = (group_mean(groups[label], label) for label in (args.label_a, args.label_b))
    if not np.array_equal(groups[args.label_a][0]["users"], groups[args.label_b][0]["users"]):
        raise SystemExit("the two groups' checkpoints do not share one dataset's test users.")
    result = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "label_a": args.label_a,
        "label_b": args.label_b,
        "checkpoints": {
            label: [
                {
                    "checkpoint": r["checkpoint"],
                    "seed": r["seed"],
                    f"ndcg@{args.k}": float(r["ndcg"].mean()),
                    f"recall@{args.k}": float(r["recall"].mean()),
                }
                for r in rows
            ]
            for label, rows in groups.items()
        },
        f"ndcg@{args.k}": paired(a["ndcg"], b["ndcg"], args.n_boot),
        f"recall@{args.k}": paired(a["recall"], b["recall"], args.n_boot),
        "by_history_length": {
            f"ndcg@{args.k}": by_length(a["ndcg"], b["ndcg"], groups[args.label_a][0]["length"], edges, args.n_boot),
            f"recall@{args.k}": by_length(
                a["recall"], b["recall"], groups[args.label_a][0]["length"], edges, args.n_boot
            ),
        },
    }
    for metric in (f"ndcg@{args.k}", f"recall@{args.k}"):
        r = result[metric]
        print(
            f"{metric}: {args.label_a} {r['mean_a']:.4f} vs {args.label_b} {r['mean_b']:.4f}: ratio {r['ratio']:.3f} "
            f"[{r['ratio_ci'][0]:.3f}, {r['ratio_ci'][1]:.3f}], users better {r['a_better']} / {r['b_better']}, "
            f"sign p {r['sign_p']:.3g}, t p {r['t_p']:.3g}"
        )
    print(f"by history length, ndcg@{args.k}: lengths, users, {args.label_a}, {args.label_b}, ratio [95 % interval]")
    for r in result["by_history_length"][f"ndcg@{args.k}"]:
        print(
            f"  {r['lengths']:>6} {r['n_users']:>7} {r['mean_a']:.4f} {r['mean_b']:.4f} {r['ratio']:.3f} "
            f"[{r['ratio_ci'][0]:.3f}, {r['ratio_ci'][1]:.3f}]"
        )
    dataset = groups[args.label_a][0]["dataset"]
    out = os.path.join(RESULTS, f"paired_test-{dataset}{args.results_tag}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
