r"""How much next-item signal each item-text representation carries on its own, with no training.

For every user's test case (the history's last item ``p`` and the target ``t``), items are ranked by the cosine
similarity of their text to ``p``'s (``p`` itself excluded), and the rank of ``t`` is scored (HR@10, NDCG@10, MRR),
for: the bag of title words (TF-IDF, the words FLR's default embedding bag reads), the frozen SmolLM2 title features
(``item_text_encoder: smollm2``, centred as FLR uses them; and whitened, BERT-whitening's cure for the anisotropy of
pooled LM states), the words and the whitened features fused (the sum of both cosines), and, as
references, training popularity and chance. Also the share of cases whose ``p`` and ``t`` share a title word, and
how many hits each text finds that the other misses.

If the language model's features rank the next item no better than the words they were computed from, they hold no
usable knowledge beyond those words for this data, and a model that already learns a bag of title words has nothing
to gain from them (issue 17). Prints a table and writes benchmarks/results/text_signal-<dataset>.json. Example:

    python benchmarks/research/text_signal.py --dataset amazon-games-mini --data_path ../shared/datasets \
        --cache_dir benchmarks/scratch/item_text
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch
from scipy.stats import binomtest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
from common import PROTOCOL, RESULTS, ROOT  # noqa: E402

from recbole_flr.quick_start import prepare  # noqa: E402

K = 10


def test_cases(test_data):
    r"""(last history item, target) of every test user, as two int64 arrays."""
    last, target = [], []
    for interaction, *_ in test_data:
        seq, length = interaction["item_id_list"], interaction["item_length"]
        last.append(seq[torch.arange(len(seq)), length - 1])
        target.append(interaction["item_id"])
    return torch.cat(last).numpy(), torch.cat(target).numpy()


def tfidf(title_ids, n_words):
    r"""Row-normalised TF-IDF of each item's title words (a sparse [n_items, n_words] matrix; word 0 is padding)."""
    rows, cols = np.nonzero(title_ids)
    words = title_ids[rows, cols]
    counts = sp.csr_matrix((np.ones(len(words)), (rows, words)), shape=(len(title_ids), n_words))
    counts.data[:] = 1.0  # presence
    df = np.bincount(counts.indices, minlength=n_words)
    idf = np.log((1 + len(title_ids)) / (1 + df)) + 1.0
    x = counts.multiply(idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x


def ranks(similarity_fn, last, target, chunk=2048):
    r"""The 1-based rank of each target among the real items (id >= 1) by ``similarity_fn(rows)`` [len(rows), n_items],
    the history's last item excluded; ties count half (the expected rank under a random tie-break)."""
    out = np.empty(len(last))
    for start in range(0, len(last), chunk):
        p, t = last[start : start + chunk], target[start : start + chunk]
        s = similarity_fn(p).astype(np.float64)
        s[:, 0] = -np.inf
        s[np.arange(len(p)), p] = -np.inf
        mine = s[np.arange(len(p)), t][:, None]
        out[start : start + chunk] = 1 + (s > mine).sum(1) + 0.5 * ((s == mine).sum(1) - 1)
    return out


def whiten(features, eps=1e-3):
    r"""Unit-norm rows of the centred features whitened over the items with text (covariance to identity; eigenvalues
    below ``eps`` times the largest are floored there), zero rows kept zero."""
    has_text = np.abs(features).sum(1) > 0
    values, vectors = np.linalg.eigh(np.cov(features[has_text], rowvar=False))
    white = features @ vectors / np.sqrt(np.maximum(values, eps * values.max()))
    white[~has_text] = 0.0
    return white / np.maximum(np.linalg.norm(white, axis=1, keepdims=True), 1e-12)


def metrics(rank):
    hit = rank <= K
    return {
        f"hit@{K}": float(hit.mean()),
        f"ndcg@{K}": float(np.where(hit, 1.0 / np.log2(rank + 1), 0.0).mean()),
        "mrr": float((1.0 / rank).mean()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon-games-mini")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--cache_dir", default="saved/item_text", help="item_text_cache_dir of the SmolLM2 features")
    parser.add_argument("--pooling", default="mean", help="item_text_pooling (mean or last; encodes if not cached)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tick = time.time()
    config_dict = {"item_text_encoder": "smollm2", "item_text_cache_dir": args.cache_dir, "train_stages": ["sft"]}
    config_dict["item_text_pooling"] = args.pooling
    if args.data_path:
        config_dict["data_path"] = args.data_path
    protocol = os.path.join(ROOT, PROTOCOL)
    config, model, dataset, train_data, _, test_data = prepare("FLR", args.dataset, [protocol], config_dict)
    field, n_items = model.item_text_field, dataset.item_num
    last, target = test_cases(test_data)

    bow = tfidf(dataset.item_feat[field].numpy(), dataset.num(field))
    llm = model.item_text.features.numpy().astype(np.float64)  # centred, as FLR's projection reads them
    white = whiten(llm)
    llm /= np.maximum(np.linalg.norm(llm, axis=1, keepdims=True), 1e-12)
    popularity = np.bincount(train_data._dataset.inter_feat["item_id"].numpy(), minlength=n_items).astype(float)

    def bow_sim(p):
        return (bow[p] @ bow.T).toarray()

    def llm_sim(p):
        return llm[p] @ llm.T

    def white_sim(p):
        return white[p] @ white.T

    rows = {
        "bag of title words (TF-IDF)": ranks(bow_sim, last, target),
        "SmolLM2 title features": ranks(llm_sim, last, target),
        "SmolLM2, whitened": ranks(white_sim, last, target),
        "words + whitened SmolLM2 (sum of cosines)": ranks(lambda p: bow_sim(p) + white_sim(p), last, target),
        "training popularity": ranks(lambda p: np.tile(popularity, (len(p), 1)), last, target),
    }
    shared = bow[last].multiply(bow[target]).sum(1) > 0
    bow_hit, llm_hit = rows["bag of title words (TF-IDF)"] <= K, rows["SmolLM2, whitened"] <= K
    result = {
        "dataset": args.dataset,
        "cases": len(last),
        "items": n_items - 1,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread",
        "seconds": round(time.time() - tick, 1),
        "command": "python " + " ".join(sys.argv),
        "rows": {name: metrics(rank) for name, rank in rows.items()},
        "chance": {f"hit@{K}": K / (n_items - 2)},
        "share_with_a_common_title_word": float(np.asarray(shared).mean()),
        f"hits@{K}_only_bow": int((bow_hit & ~llm_hit).sum()),
        f"hits@{K}_only_llm": int((llm_hit & ~bow_hit).sum()),
        f"hits@{K}_both": int((bow_hit & llm_hit).sum()),
        # McNemar's exact test on the cases where exactly one of the two finds the target in its top 10
        "mcnemar_p": float(binomtest(int((bow_hit & ~llm_hit).sum()), int((bow_hit ^ llm_hit).sum())).pvalue),
    }
    print(
        f"{args.dataset}: {len(last)} test cases, {n_items - 1} items; the target ranked by similarity to the last item"
    )
    print(f"| representation | HR@{K} | NDCG@{K} | MRR |\n|---|---|---|---|")
    for name, m in result["rows"].items():
        print(f"| {name} | {m[f'hit@{K}']:.4f} | {m[f'ndcg@{K}']:.4f} | {m['mrr']:.4f} |")
    print(f"| chance | {K / (n_items - 2):.4f} | | |")
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "command")}))
    tag = "" if args.pooling == "mean" else f"-{args.pooling}"
    result["pooling"] = args.pooling
    out = os.path.join(RESULTS, f"text_signal-{args.dataset}{tag}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
