r"""Which of RecBole 1.2.1's sequential models run through the plugin's run function: each trains one epoch on the
tests' tiny dataset (40 users, 60 items, a title per item) in its own process, with the tests' tiny settings less the
keys that belong to other models, and the line it ends with is printed (the test metrics, or the one-line error).
The list and the reasons are in docs/recbole_models.md. Example (a few minutes on a CPU):

    python benchmarks/research/recbole_models.py                      # every sequential model
    python benchmarks/research/recbole_models.py FEARec --set n_layers=2
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
from common import ROOT  # noqa: E402

ONE = r"""
import math, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from conftest import tiny_settings
from recbole_flr import run_recbole_flr
from recbole_flr.config import foreign_keys
from recbole_flr.errors import USER_ERRORS
model, folder, extra = sys.argv[2], sys.argv[3], eval(sys.argv[4])
settings = tiny_settings(folder, **extra)
settings = {key: value for key, value in settings.items() if key not in foreign_keys(model, settings)}
sys.argv = sys.argv[:1]
try:
    result = run_recbole_flr(model=model, dataset="tiny", config_dict=settings)["test_result"]
    finite = all(map(math.isfinite, result.values()))
    print(f"{model}: runs, test ndcg@10 {result['ndcg@10']:.4f}" + ("" if finite else " (a metric is not finite)"))
except USER_ERRORS as error:
    print(f"{model}: refused: {error}")
"""


def sequential_models():
    import recbole

    folder = os.path.join(os.path.dirname(recbole.__file__), "model", "sequential_recommender")
    names = {os.path.basename(path)[:-3] for path in glob.glob(os.path.join(folder, "*.py"))} - {"__init__"}
    properties = os.path.join(os.path.dirname(recbole.__file__), "properties", "model")
    spelled = {
        os.path.basename(path)[:-5].lower(): os.path.basename(path)[:-5] for path in glob.glob(properties + "/*")
    }
    return sorted(spelled[name] for name in names if name in spelled)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="model names (default: every RecBole sequential model)")
    parser.add_argument("--set", action="append", default=[], help="key=value (YAML) for every model")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per model")
    args = parser.parse_args()
    extra = {pair.split("=", 1)[0]: yaml.safe_load(pair.split("=", 1)[1]) for pair in args.set}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for model in args.models or sequential_models():
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, "-c", ONE, ROOT, model, folder, repr(extra)]
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, cwd=folder, env=env, timeout=args.timeout
                )
                lines = [line for line in done.stdout.splitlines() if line.startswith(f"{model}: ")]
                print(lines[-1] if lines else f"{model}: fails: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            except subprocess.TimeoutExpired:
                print(f"{model}: still running after {args.timeout} s")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
