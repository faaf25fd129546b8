"""Wall-clock time of the README's main job, run exactly as a new user runs it, from start to tested model.

    python benchmarks/main_job.py            # the README command, in a scratch working directory
    python benchmarks/main_job.py --epochs=2 --output=/tmp/probe.json   # the same with more --key=value

Runs `OMP_NUM_THREADS=1 python run_recbole_flr.py --model=FLR --dataset=ml-100k
--config_files=recbole_flr/properties/protocol.yaml` (the README's first command after the install) in a fresh
process with every other default (RecBole's 300 epochs and stopping_step 10, then up to 10 GRPO epochs), then reads
its log: the epochs each stage ran, the test NDCG@10, and whether GRPO beat SFT. Prints a table and writes
benchmarks/results/main_job-ml-100k.json (machine, threads, load average at start and end). The README states the
time measured here; this is a benchmark, not a test (it takes minutes).

Why one thread: on a 2-core machine that runs anything else, torch's default of one OpenMP thread per core makes
each thread wait for the other at every small operation; an SFT epoch of this job took 9 s with one thread, and 83 s,
91 s and over 4 minutes in three tries with two while other jobs used the cores (same machine, same hour).
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: common.py
from common import PROTOCOL, RESULTS, ROOT, SCRATCH, cpu_name  # noqa: E402

COMMAND = [
    "run_recbole_flr.py",
    "--model=FLR",
    "--dataset=ml-100k",
    f"--config_files={PROTOCOL}",
]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join(RESULTS, "main_job-ml-100k.json"))
    parser.add_argument("--omp_threads", default="1", help="OMP_NUM_THREADS of the run, as in the README ('' unsets)")
    args, args.extra = parser.parse_known_args()  # any other --key=value goes to the run (default: none)

    workdir = os.path.join(SCRATCH, "main_job")  # ignored by git: log/, saved/ land here
    os.makedirs(workdir, exist_ok=True)
    protocol = os.path.join(ROOT, PROTOCOL)
    command = [sys.executable, os.path.join(ROOT, COMMAND[0]), *COMMAND[1:3], f"--config_files={protocol}", *args.extra]
    load_start = os.getloadavg()
    start = time.time()
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("OMP_NUM_THREADS", None)
    if args.omp_threads:
        env["OMP_NUM_THREADS"] = args.omp_threads
    out = subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=env)
    seconds = time.time() - start
    load_end = os.getloadavg()
    log = ANSI.sub("", out.stdout + out.stderr)
    if out.returncode != 0:
        sys.exit(f"the main job failed (exit {out.returncode}):\n{log[-3000:]}")

    epochs, epoch_time = {"sft": 0, "grpo": 0}, {"sft": 0.0, "grpo": 0.0}
    stage = None
    for line in log.splitlines():
        found = re.search(r"FLR stage \[(sft|grpo)\]", line)
        if found:
            stage = found.group(1)
        trained = re.search(r"epoch \d+ training \[time: ([0-9.]+)s", line)
        if trained and stage:
            epochs[stage] += 1
            epoch_time[stage] += float(trained.group(1))
    epoch_seconds = {stage: round(epoch_time[stage] / epochs[stage], 2) for stage in epochs if epochs[stage]}
    test = re.search(r"^ndcg@10\s+\S+\s+([0-9.e-]+)$", out.stdout, re.M)  # the run's table: metric, best valid, test
    result = {
        "command": (f"OMP_NUM_THREADS={args.omp_threads} " if args.omp_threads else "")
        + "python "
        + " ".join(COMMAND + args.extra),
        "minutes": round(seconds / 60, 2),
        "sft_epochs": epochs["sft"],
        "grpo_epochs": epochs["grpo"],
        "grpo_beat_sft": "GRPO beat SFT" in log,
        "test_ndcg@10": float(test.group(1)) if test else None,
        "load_average_start": round(load_start[0], 2),
        "load_average_end": round(load_end[0], 2),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
    }
    result["seconds_per_epoch"] = {stage: float(v) for stage, v in epoch_seconds.items()}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    rows = [(key, json.dumps(value) if isinstance(value, dict) else value) for key, value in result.items()]
    width = max(len(key) for key, _ in rows)
    print("| " + "what".ljust(width) + " | value |\n| " + "-" * width + " | --- |")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
