"""FLR (SFT then GRPO) trained in one process and in two (RecBole's distributed mode, gloo on a CPU) on the tests'
tiny dataset: how far apart the metrics land after real training (the tests check that evaluation alone is exact).

    python benchmarks/one_vs_two_processes.py
"""

import json
import os
import socket
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests"), REPO]

from conftest import write_tiny_dataset  # noqa: E402

from recbole_flr.quick_start import run  # noqa: E402

if __name__ == "__main__":
    scratch = tempfile.mkdtemp(prefix="one_vs_two_")
    os.chdir(scratch)
    write_tiny_dataset(os.path.join(scratch, "data"))
    config = {
        "data_path": os.path.join(scratch, "data"),
        "MAX_ITEM_LIST_LENGTH": 10,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title"]},
        "epochs": 5,
        "grpo_epochs": 2,
        "learning_rate": 0.003,
        "train_batch_size": 64,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "n_factors": 2,
        "show_progress": False,
        "state": "ERROR",
        "gpu_id": "",
        "metrics": ["NDCG", "Recall"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "checkpoint_dir": "saved",
    }
    one = run("FLR", "tiny", config_dict=dict(config))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    two = run("FLR", "tiny", config_dict=dict(config), nproc=2, port=port)
    rows = {"1 process": one, "2 processes": two}
    print(f"{'run':<12} {'valid ndcg@10':>14} {'test ndcg@10':>13} {'test recall@10':>15}")
    for name, result in rows.items():
        test = result["test_result"]
        print(f"{name:<12} {result['best_valid_score']:>14.4f} {test['ndcg@10']:>13.4f} {test['recall@10']:>15.4f}")
    out = os.path.join(REPO, "benchmarks", "results", "one_vs_two_processes.json")
    with open(out, "w") as f:
        json.dump(
            {
                name: {
                    "best_valid": float(r["best_valid_score"]),
                    "test": {k: float(v) for k, v in r["test_result"].items()},
                }
                for name, r in rows.items()
            },
            f,
            indent=2,
        )
    print(f"wrote {out}")
