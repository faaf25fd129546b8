r"""The results pages: every model of the zoo tuned with ``run_hyper.py`` under one budget, then its best setting with
two more seeds, on one dataset; then the page ``docs/results/<dataset>.md`` and the index ``docs/results/README.md``,
made from the result files (nothing on a page is typed by hand). ``--page`` only writes the page and the index.

For each model (in order, ``--jobs`` models at a time, one torch thread each), two ``run_hyper.py`` searches, both
resumable (a finished trial is read back from its result file, not trained again):

1. the tuning: the model's shipped params file (``recbole_flr/properties/hyper/<model>.hyper``), ``--algo
   exhaustive --max_evals N`` (the same N for every model), with ``recbole_flr/properties/protocol.yaml``, early
   stopping as RecBole's defaults (``stopping_step: 10``), seed 2020;
2. the seeds: the best setting (its result file, which is YAML) with ``seed`` 2021 and 2022
   (``recbole_flr/properties/hyper/seeds.hyper``).

Result files: ``benchmarks/results/zoo/<dataset>/<label>.result`` (+ ``.json``) and ``<label>-seeds.result``; the
checkpoints and each model's log go to ``benchmarks/scratch/zoo`` (not kept). Labels: a RecBole or plugin model name,
or ``FLR-backbone`` (FLR's backbone-alone control, ``recbole_flr/properties/controls/backbone_alone.yaml``).

The page: each model's test Recall@10, MRR@10, NDCG@10 and Hit@10 as mean ± sample std over its seeds (the best tuning
trial, seed 2020, and the seeds 2021 and 2022 of ``<label>-seeds.result``), the best epoch, the training seconds per
epoch of those runs (two runs side by side on the machine: compare within a page only) and, when
``benchmarks/results/zoo/<dataset>/step_cost.json`` exists, the cost of a training epoch as a ratio to SASRecAllPos's,
timed in one run (``benchmarks/step_cost.py``). A model with fewer than 3 finished seeds is listed as pending.

    python benchmarks/zoo.py --dataset amazon-games-mini --data_path ../shared/datasets --jobs 2
    python benchmarks/zoo.py --dataset ml-100k --models FLR FLR-backbone SASRecAllPos --jobs 2
    python benchmarks/zoo.py --page --dataset amazon-games-mini --data_path ../shared/datasets   # the page only
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: common.py
from common import PROTOCOL, ROOT, in_parallel, mean_std, mean_std_text  # noqa: E402

PROPERTIES = os.path.join("recbole_flr", "properties")
CONTROLS = {"FLR-backbone": ("FLR", [os.path.join(PROPERTIES, "controls", "backbone_alone.yaml")])}
#: the models of the results pages, cheapest first within each family so that partial runs still compare
ZOO = [
    "FLR",
    "FLR-backbone",
    "SASRecAllPos",
    "SASRec",
    "GRU4Rec",
    "NARM",
    "CORE",
    "SINE",
    "LightSANs",
    "SASRecF",
    "FDSA",
    "BERT4Rec",
]
#: RecBole's feature-aware models read the item text FLR reads: the dataset's title field
FEATURE_MODELS = ("SASRecF", "FDSA", "GRU4RecF")
TITLE_FIELD = {"ml-100k": "movie_title", "ml-1m": "movie_title"}  # others: title
#: what each model reads of an item besides its id (the dataset's title field, where it has one)
INPUTS = {"FLR": "title words", "FLR-backbone": "title words", "SASRecF": "title", "FDSA": "title"}
METRICS = ["recall@10", "mrr@10", "ndcg@10", "hit@10"]
SEEDS = 3

RESULTS = os.path.join(ROOT, "benchmarks", "results", "zoo")
DOCS = os.path.join(ROOT, "docs", "results")
SCRATCH = os.path.join("benchmarks", "scratch", "zoo")  # checkpoints and logs, relative to the checkout
FOLDERS = {"results": RESULTS, "docs": DOCS}  # where the result files are and the pages go (--results, --docs)
#: the pages' links to the rest of the documentation (relative to docs/results/)
SEE_ALSO = (
    "See also: [the README](../../README.md) (install, run, the package), [the claims](../claims.md) (what these "
    "results support) and [the research log](../research_log.md) (the dated probes behind them)."
)


def results_dir(dataset):
    return os.path.join(FOLDERS["results"], dataset)


# ----------------------------------------------------------------------------------------------- the runs
def searches(label, dataset, max_evals, data_path, settings=(), scratch=SCRATCH):
    r"""The two ``run_hyper.py`` command lines of one model: its tuning, then its best setting's seeds."""
    model, extra_files = CONTROLS.get(label, (label, []))
    out = os.path.join(results_dir(dataset), label)
    fixed = [
        f"--model={model}",
        f"--dataset={dataset}",
        "--show_progress=False",
        f"--checkpoint_dir={os.path.join(scratch, dataset)}",
    ]
    if data_path:
        fixed.append(f"--data_path={data_path}")
    fixed += [f"--{setting}" for setting in settings]
    if model in FEATURE_MODELS:
        title = TITLE_FIELD.get(dataset, "title")
        fixed += [
            f"--selected_features=['{title}']",
            "--load_col={'inter': ['user_id', 'item_id', 'timestamp'], 'item': ['item_id', '" + title + "']}",
        ]
    files = [PROTOCOL] + extra_files
    tune = fixed + [
        f"--config_files={' '.join(files)}",
        f"--params_file={os.path.join(PROPERTIES, 'hyper', model + '.hyper')}",
        "--algo=exhaustive",
        f"--max_evals={max_evals}",
        f"--output_file={out}.result",
    ]
    seeds = fixed + [
        f"--config_files={' '.join(files + [os.path.relpath(out, ROOT) + '.result'])}",
        f"--params_file={os.path.join(PROPERTIES, 'hyper', 'seeds.hyper')}",
        "--algo=exhaustive",
        f"--output_file={out}-seeds.result",
    ]
    return tune, seeds


def run_model(label, args):
    r"""One model's two searches (its log: ``<scratch>/<dataset>-<label>.out``); True when both finished."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = os.path.join(ROOT, args.scratch, f"{args.dataset}-{label}.out")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    commands = searches(label, args.dataset, args.max_evals, args.data_path, args.set, args.scratch)
    for phase, command in zip(("tuning", "seeds"), commands):
        start = time.time()
        with open(log, "a") as out:
            done = subprocess.run([sys.executable, "run_hyper.py"] + command, cwd=ROOT, env=env, stdout=out, stderr=out)
        status = "done" if done.returncode == 0 else f"FAILED (exit {done.returncode}, see {log})"
        print(f"{args.dataset} {label} {phase}: {status} in {time.time() - start:.0f} s", flush=True)
        if done.returncode:
            return False
    return True


# ----------------------------------------------------------------------------------------------- the page
def read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def model_runs(dataset, label):
    r"""(tuning, runs of the best setting, the tuning's search): the runs are the best trial and its other seeds."""
    folder = results_dir(dataset)
    tuning = read_json(os.path.join(folder, f"{label}.result.json"))
    if not tuning or not tuning["best"]:
        return tuning, [], None
    seeds = read_json(os.path.join(folder, f"{label}-seeds.result.json"))
    runs = [tuning["best"]] + [trial for trial in (seeds or {}).get("trials", []) if not trial.get("failed")]
    return tuning, runs, tuning["search"]


def dataset_statistics(dataset, data_path):
    r"""RecBole's statistics of the dataset as the runs load it, cached in the results folder."""
    path = os.path.join(results_dir(dataset), "dataset.json")
    cached = read_json(path)
    if cached:
        return cached
    from recbole_flr.config import Config
    from recbole_flr.utils import ensure_dataset, load_dataset

    settings = {"data_path": data_path} if data_path else {}
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line
    config = Config(
        model="SASRec", dataset=dataset, config_file_list=[os.path.join(ROOT, PROTOCOL)], config_dict=settings
    )
    ensure_dataset(config)
    data = load_dataset(config)
    stats = {
        "users": data.user_num - 1,
        "items": data.item_num - 1,
        "interactions": data.inter_num,
        "actions per user": round(data.avg_actions_of_users, 2),
        "sparsity": f"{100 * data.sparsity:.2f} %",
        "history length": config["MAX_ITEM_LIST_LENGTH"],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
    return stats


def rows(dataset):
    table = []
    for label in ZOO:
        tuning, runs, search = model_runs(dataset, label)
        if tuning is None:
            continue
        tests = {metric: [run["test_result"][metric] for run in runs] for metric in METRICS}
        table.append(
            {
                "label": label,
                "trials": len(tuning["trials"]),
                "seeds": len(runs),
                "tests": tests,
                "ndcg": statistics.mean(tests["ndcg@10"]) if runs else None,
                "best_epoch": statistics.mean(run["best_epoch"] or 0 for run in runs) if runs else None,
                "s_per_epoch": statistics.mean(run["train_s_per_epoch"] or 0 for run in runs) if runs else None,
                "best_params": tuning["best"]["params"] if tuning["best"] else None,
                "space": tuning["search"]["params"],
                "search": search or tuning["search"],
            }
        )
    return table


def step_cost_ratios(dataset):
    r"""{label: training epoch cost / SASRecAllPos's}, timed in one run by ``benchmarks/step_cost.py --out
    benchmarks/results/zoo/<dataset>/step_cost`` (its rows: ``FLR:default``, ``FLR:backbone``, RecBole's models)."""
    cost = read_json(os.path.join(results_dir(dataset), "step_cost.json"))
    if not cost:
        return {}
    epoch = {_label(row["row"]): row["epoch_s"] for row in cost["rows"]}
    base = epoch.get("SASRecAllPos")
    return {label: seconds / base for label, seconds in epoch.items()} if base else {}


def cost_machine(dataset):
    cost = read_json(os.path.join(results_dir(dataset), "step_cost.json"))
    return cost["machine"] if cost else None


def _label(row):
    model, variant = (row.split(":") + [""])[:2]
    return "FLR-backbone" if (model, variant) == ("FLR", "backbone") else model


def page(dataset, data_path):
    r"""Write ``docs/results/<dataset>.md``; returns the models (done, pending, not started)."""
    stats = dataset_statistics(dataset, data_path)
    table = rows(dataset)
    done = sorted((row for row in table if row["seeds"] >= SEEDS), key=lambda row: -row["ndcg"])
    pending = [row for row in table if row["seeds"] < SEEDS]
    missing = [label for label in ZOO if label not in {row["label"] for row in table}]
    ratios = step_cost_ratios(dataset)
    with open(os.path.join(ROOT, PROTOCOL), encoding="utf-8") as f:
        protocol = f.read()
    dataset_yaml = os.path.join(ROOT, "recbole_flr", "properties", "dataset", f"{dataset}.yaml")
    lines = [
        f"# {dataset}: FLR beside RecBole's sequential models",
        "",
        "Generated by `python benchmarks/zoo.py --page` from `benchmarks/results/zoo/" + dataset + "/` (do not edit "
        "by hand). Every model was tuned with `run_hyper.py` under the same budget (its shipped params file, "
        "`--algo=exhaustive`: every point of its grid, seed 2020), each run trained to early stopping (RecBole's "
        "`stopping_step: 10` on valid NDCG@10), then its best setting was rerun with seeds 2021 and 2022. Test "
        "metrics are mean ± sample std over the 3 seeds. `FLR-backbone` is FLR's own control: the same decoder, "
        "inputs and loss without the latent module (`recbole_flr/properties/controls/backbone_alone.yaml`). The "
        "runs went two at a time, one torch thread each, on a 2-core CPU that other work shared: `s / training "
        "epoch` is their wall time under that load; the epoch cost ratio is timed in one run (`benchmarks/"
        "step_cost.py`, thread CPU time" + (f"; {cost_machine(dataset)}" if cost_machine(dataset) else "") + ").",
        "",
        SEE_ALSO,
        "",
        "## Protocol",
        "",
        "```yaml",
        protocol.rstrip(),
    ]
    if os.path.isfile(dataset_yaml):
        with open(dataset_yaml, encoding="utf-8") as f:
            lines.append(f.read().rstrip())
    lines += [
        "# everything else at RecBole's defaults: epochs 300, stopping_step 10, train_batch_size 2048, "
        "loss_type CE with train_neg_sample_args ~",
        "```",
        "",
        "## Dataset",
        "",
        "| " + " | ".join(stats) + " |",
        "|" + "---|" * len(stats),
        "| " + " | ".join(str(value) for value in stats.values()) + " |",
        "",
        "## Results",
        "",
    ]
    if done:
        best = done[0]
        flr = next((row for row in done if row["label"] == "FLR"), None)
        if flr:
            rank = done.index(flr) + 1
            verdict = f"FLR ranks **{rank} of {len(done)}** on test NDCG@10" + (
                f"; first is {best['label']}, FLR is {flr['ndcg'] / best['ndcg']:.3f}x its NDCG@10."
                if rank > 1
                else (
                    f", {flr['ndcg'] / done[1]['ndcg']:.3f}x the second, {done[1]['label']}." if len(done) > 1 else "."
                )
            )
            lines += [verdict, ""]
    ratio_head = " | epoch cost / SASRecAllPos" if ratios else ""
    lines += [
        "| model | item inputs | Recall@10 | MRR@10 | NDCG@10 | Hit@10 | best epoch | s / training epoch"
        + ratio_head
        + " |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if ratios else ""),
    ]
    for row in done:
        inputs = "id + " + INPUTS[row["label"]] if row["label"] in INPUTS else "id"
        cells = [row["label"], inputs] + [mean_std_text(mean_std(row["tests"][metric])) for metric in METRICS]
        cells += [f"{row['best_epoch']:.1f}", f"{row['s_per_epoch']:.1f}"]
        if ratios:
            cells.append(f"{ratios[row['label']]:.2f}x" if row["label"] in ratios else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if not done and ratios:
        costs = ", ".join(f"{label} {ratio:.2f}x" for label, ratio in sorted(ratios.items(), key=lambda item: item[1]))
        lines += [
            "",
            f"No model has finished its 3 seeds yet. A training epoch costs, as a ratio to SASRecAllPos's: {costs}.",
        ]
    if pending or missing:
        lines += [
            "",
            "Not yet on the table (the zoo's runs continue: `python benchmarks/zoo.py --dataset " + dataset + "`):",
        ]
        for row in pending:
            lines.append(f"- {row['label']}: {row['trials']} tuning trial(s), {row['seeds']} of {SEEDS} seeds finished")
        for label in missing:
            lines.append(f"- {label}: not started")
    lines += [
        "",
        "## Best settings and the searched range",
        "",
        "| model | best setting (seed 2020) | searched | trials |",
        "|---|---|---|---|",
    ]
    for row in table:
        best_params = ", ".join(f"{k}: {v}" for k, v in (row["best_params"] or {}).items()) or "-"
        space = "; ".join(f"{name} {kind} {values}" for name, kind, values in row["space"])
        lines.append(f"| {row['label']} | {best_params} | {space} | {row['trials']} |")
    lines += ["", "## Commands", "", "```bash"]
    data = f" --data_path {data_path}" if data_path else ""
    lines += [
        f"python benchmarks/zoo.py --dataset {dataset}{data} --jobs 2   # every model's two searches, resumable",
        f"python benchmarks/zoo.py --page --dataset {dataset}{data}     # this page",
        "# one model's tuning, as the zoo runs it (benchmarks/results/zoo/<dataset>/<model>.result.json: 'search'):",
    ]
    if table:
        search = next((row["search"] for row in table if row["label"] == "FLR"), table[0]["search"])
        fixed = " ".join(f"--{k}={v!r}" if " " in str(v) else f"--{k}={v}" for k, v in search["fixed"].items())
        lines.append(
            f"python run_hyper.py --model={search['model']} --dataset={dataset} "
            f"--config_files=\"{' '.join(search['config_files'] or [])}\" --params_file={search['params_file']} "
            f"--algo={search['algo']} {fixed}"
        )
    lines += ["```", ""]
    os.makedirs(FOLDERS["docs"], exist_ok=True)
    with open(os.path.join(FOLDERS["docs"], f"{dataset}.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return done, pending, missing


def index():
    r"""docs/results/README.md: one line per page, with where FLR ranks."""
    lines = [
        "# Results",
        "",
        "One page per dataset, each generated from result files by `python benchmarks/zoo.py --page --dataset <name>`:",
        "FLR beside RecBole's sequential models, every model tuned with `run_hyper.py` under the same budget, 3 seeds.",
        "",
        SEE_ALSO,
        "",
        "| dataset | models with 3 seeds | first on test NDCG@10 | FLR |",
        "|---|---|---|---|",
    ]
    for name in sorted(os.listdir(FOLDERS["results"])):
        if not os.path.isdir(results_dir(name)):
            continue
        table = rows(name)
        done = sorted((row for row in table if row["seeds"] >= SEEDS), key=lambda row: -row["ndcg"])
        flr = next((i for i, row in enumerate(done) if row["label"] == "FLR"), None)
        first = f"{done[0]['label']} ({done[0]['ndcg']:.4f})" if done else "-"
        where = (
            f"rank {flr + 1} ({done[flr]['ndcg'] / done[0]['ndcg']:.3f}x the first)" if flr is not None else "pending"
        )
        page_file = os.path.join(FOLDERS["docs"], f"{name}.md")
        link = f"[{name}]({name}.md)" if os.path.isfile(page_file) else f"{name} (no page yet)"
        lines.append(f"| {link} | {len(done)} of {len(ZOO)} | {first} | {where} |")
    with open(os.path.join(FOLDERS["docs"], "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", default=None, help="folder of the dataset (default: RecBole's dataset/)")
    parser.add_argument("--page", action="store_true", help="only write the page and the index from the result files")
    parser.add_argument("--models", nargs="+", default=ZOO, help=f"labels (default: {' '.join(ZOO)})")
    parser.add_argument("--max_evals", type=int, default=2, help="tuning trials per model, the same for every model")
    parser.add_argument("--jobs", type=int, default=2, help="models trained at a time (one torch thread each)")
    parser.add_argument("--set", nargs="*", default=[], help="key=value settings of every run (e.g. epochs=50)")
    parser.add_argument("--results", default=RESULTS, help="folder of the result files (one folder per dataset)")
    parser.add_argument("--docs", default=DOCS, help="folder of the pages (docs/results)")
    parser.add_argument("--scratch", default=SCRATCH, help="folder of the checkpoints and logs (not kept)")
    args = parser.parse_args()
    FOLDERS.update(results=args.results, docs=args.docs)
    if not args.page:
        finished = in_parallel(args.jobs, [functools.partial(run_model, label, args) for label in args.models])
        print(f"{sum(finished)} of {len(finished)} models finished", flush=True)
    done, pending, missing = page(args.dataset, args.data_path)
    index()
    counts = f"{len(done)} models with {SEEDS} seeds, {len(pending)} pending, {len(missing)} not started"
    print(f"{os.path.relpath(os.path.join(FOLDERS['docs'], args.dataset + '.md'), ROOT)}: {counts}")


if __name__ == "__main__":
    main()
