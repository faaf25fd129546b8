"""What item text costs: the one-time encoding of every item's text by a frozen LM (``item_text_encoder``), and the
training step of FLR and SASRecAllPos with ids only, a bag of title words, and the frozen LM's features.

The step times are measured round-robin (one step of each model in turn, ``--rounds`` times, after a warm-up step), so
a change in the machine's load touches every model alike, as this thread's CPU time with one torch thread (waits for
a busy core do not count; wall time with more threads); the median per model is reported, times the train loader's
batches per epoch. The encoding is timed on a fresh encoder, without the cache, on ``--encode_items`` items
(model loading reported apart).

    python benchmarks/research/item_text_cost.py --dataset amazon-games-mini --data_path ../shared/datasets

Writes benchmarks/results/item_text_cost-<dataset>.json and .md.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
from common import RESULTS, ROOT, SCRATCH, machine_line, result_row, time_rows  # noqa: E402

#: (row name, model, config): ids only, the bag of title words (FLR's default), the frozen LM's title features.
ROWS = [
    ("FLR, ids only", "FLR", {"item_text_field": None}),
    ("FLR, bag of title words (default)", "FLR", {}),
    ("FLR, SmolLM2 title features", "FLR", {"item_text_encoder": "smollm2"}),
    ("FLR backbone alone, bag of title words", "FLR", {"thought_source": "none", "user_vector": "last_state"}),
    (
        "FLR backbone alone, SmolLM2 title features",
        "FLR",
        {"thought_source": "none", "user_vector": "last_state", "item_text_encoder": "smollm2"},
    ),
    ("SASRecAllPos, ids only", "SASRecAllPos", {}),
    ("SASRecAllPos, SmolLM2 title features", "SASRecAllPos", {"item_text_encoder": "smollm2"}),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-games-mini")
    parser.add_argument("--data_path", default=os.path.join(ROOT, "..", "shared", "datasets"))
    parser.add_argument("--rounds", type=int, default=20, help="timed steps per model (round-robin)")
    parser.add_argument("--encode_items", type=int, default=512, help="items encoded for the encoding timing")
    parser.add_argument("--cache_dir", default=os.path.join(SCRATCH, "item_text"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from recbole_flr.model import item_text
    from recbole_flr.quick_start import prepare

    torch.set_num_threads(args.threads)
    shared = {
        "data_path": args.data_path,
        "item_text_cache_dir": args.cache_dir,
        "train_stages": ["sft"],
        "gpu_id": "",
        "show_progress": False,
        "state": "ERROR",
    }
    models = []
    for name, model_name, extra in ROWS:
        config, model, dataset, train_data, _, _ = prepare(model_name, args.dataset, config_dict={**shared, **extra})
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        batches = [batch for _, batch in zip(range(args.rounds + 1), train_data)]
        models.append(
            {
                "name": name,
                "model": model,
                "optimizer": optimizer,
                "batches": batches,
                "times": [],
                "batches_per_epoch": len(train_data),
            }
        )
        print(f"[item_text_cost] built {name}", flush=True)
    time_rows(models, args.rounds)  # round-robin, after a warm-up step

    # the one-time encoding, without the cache: model loading, then the texts
    texts = item_text.item_texts(dataset, [item_text.resolve_text_field("auto", dataset)])[1:][: args.encode_items]
    from recbole_flr.model.backbone import load_pretrained_backbone

    tick = time.perf_counter()
    encoder = load_pretrained_backbone(item_text.resolve_encoder("smollm2"), "cpu")
    load_s = time.perf_counter() - tick
    tick = time.perf_counter()
    encoder.embed_texts(texts, "cpu")
    encode_s = time.perf_counter() - tick

    rows = [result_row(entry["name"], entry) for entry in models]
    base = rows[-2]["epoch_s"]
    machine = machine_line(args.threads)
    lines = [
        f"### {args.dataset}: what item text costs",
        "",
        f"Machine: {machine}.",
        "",
        "| Row | s/step (median) | batches/epoch | s/epoch | vs SASRecAllPos ids only |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['row']} | {r['step_s']:.3f} | {r['batches_per_epoch']} | {r['epoch_s']:.1f} | "
        f"{r['epoch_s'] / base:.2f}x |"
        for r in rows
    ]
    lines += [
        "",
        f"One-time encoding with SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised to float32): model loading "
        f"{load_s:.1f} s, then {len(texts)} titles in {encode_s:.1f} s ({len(texts) / encode_s:.0f} items/s); "
        f"the whole catalogue ({dataset.item_num - 1} items) is about "
        f"{load_s + (dataset.item_num - 1) * encode_s / len(texts):.0f} s once, then read from the cache.",
        "",
        f"Command: `python benchmarks/research/item_text_cost.py {' '.join(sys.argv[1:])}`",
    ]
    text = "\n".join(lines)
    print(text)
    out = os.path.join(RESULTS, f"item_text_cost-{args.dataset}")
    with open(out + ".json", "w") as f:
        json.dump(
            {
                "machine": machine,
                "rows": rows,
                "encoder_load_s": load_s,
                "encode_s": encode_s,
                "encoded_items": len(texts),
            },
            f,
            indent=1,
        )
    with open(out + ".md", "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
