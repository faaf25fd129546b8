r"""The results pages' runs: every model of the zoo tuned with ``run_hyper.py`` under one budget, then its best
setting with two more seeds, on one dataset.

For each model (in order, ``--jobs`` models at a time, one torch thread each), two ``run_hyper.py`` searches, both
resumable (a finished trial is read back from its result file, not trained again):

1. the tuning: the model's shipped params file (``recbole_flr/properties/hyper/<model>.hyper``), ``--algo
   exhaustive --max_evals N`` (the same N for every model), with ``recbole_flr/properties/protocol.yaml``, early
   stopping as RecBole's defaults (``stopping_step: 10``), seed 2020;
2. the seeds: the best setting (its result file, which is YAML) with ``seed`` 2021 and 2022
   (``recbole_flr/properties/hyper/seeds.hyper``).

Result files: ``benchmarks/results/zoo/<dataset>/<label>.result`` (+ ``.json``) and ``<label>-seeds.result``; the
checkpoints and each model's log go to ``benchmarks/scratch/zoo`` (not kept). ``python benchmarks/zoo_page.py
--dataset D`` makes the page from them. Labels: a RecBole or plugin model name, or ``FLR-backbone`` (FLR's
backbone-alone control, ``recbole_flr/properties/controls/backbone_alone.yaml``).

    python benchmarks/zoo.py --dataset amazon-games-mini --data_path ../shared/datasets --jobs 2
    python benchmarks/zoo.py --dataset ml-100k --models FLR FLR-backbone SASRecAllPos --jobs 2
"""

import argparse
import concurrent.futures
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROPERTIES = os.path.join("recbole_flr", "properties")
PROTOCOL = os.path.join(PROPERTIES, "protocol.yaml")
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


RESULTS = os.path.join(ROOT, "benchmarks", "results", "zoo")
SCRATCH = os.path.join("benchmarks", "scratch", "zoo")  # checkpoints and logs, relative to the checkout


def results_dir(dataset, results=RESULTS):
    return os.path.join(results, dataset)


def searches(label, dataset, max_evals, data_path, results=RESULTS, settings=(), scratch=SCRATCH):
    r"""The two ``run_hyper.py`` command lines of one model: its tuning, then its best setting's seeds."""
    model, extra_files = CONTROLS.get(label, (label, []))
    out = os.path.join(results_dir(dataset, results), label)
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
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = os.path.join(ROOT, args.scratch, f"{args.dataset}-{label}.out")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    commands = searches(label, args.dataset, args.max_evals, args.data_path, args.results, args.set, args.scratch)
    for phase, command in zip(("tuning", "seeds"), commands):
        start = time.time()
        with open(log, "a") as out:
            done = subprocess.run([sys.executable, "run_hyper.py"] + command, cwd=ROOT, env=env, stdout=out, stderr=out)
        status = "done" if done.returncode == 0 else f"FAILED (exit {done.returncode}, see {log})"
        print(f"{args.dataset} {label} {phase}: {status} in {time.time() - start:.0f} s", flush=True)
        if done.returncode:
            return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", default=None, help="folder of the dataset (default: RecBole's dataset/)")
    parser.add_argument("--models", nargs="+", default=ZOO, help=f"labels (default: {' '.join(ZOO)})")
    parser.add_argument("--max_evals", type=int, default=2, help="tuning trials per model, the same for every model")
    parser.add_argument("--jobs", type=int, default=2, help="models trained at a time (one torch thread each)")
    parser.add_argument("--set", nargs="*", default=[], help="key=value settings of every run (e.g. epochs=50)")
    parser.add_argument("--results", default=RESULTS, help="folder of the result files (one folder per dataset)")
    parser.add_argument("--scratch", default=SCRATCH, help="folder of the checkpoints and logs (not kept)")
    args = parser.parse_args()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        finished = list(pool.map(lambda label: run_model(label, args), args.models))
    page = f"python benchmarks/zoo_page.py --dataset {args.dataset}"
    print(f"{sum(finished)} of {len(finished)} models finished; the page: {page}")


if __name__ == "__main__":
    main()
