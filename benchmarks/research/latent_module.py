r"""FLR's latent module (all-positions mode) against the same module at another git revision: same outputs, time.

Loads ``recbole_flr/model/latent_reasoning.py`` as it was at ``--against`` (``git show``), copies the current module's
weights into it, checks that both give the same thought, factors, attention and gates at every real position of
random histories, then times forward + backward of what FLR's all-positions training computes there (``forward_at``
the real positions; a revision without it: ``forward_positions`` over every position, then the real ones picked) for
each, alternating, as one thread's CPU time (so other work on the machine does not inflate it). Shapes: windows per
batch, history length and share of real positions as in the training batches of the datasets named (ml-1m: about 47
windows of 50 per batch of 2048 rows; amazon-games: about 310 of 20; amazon-games-mini: 380 of 20, 27 % real).

    .venv/bin/python benchmarks/research/latent_module.py --against 3e7c50e

Prints a table; writes benchmarks/results/latent_module.json.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
from common import RESULTS, ROOT  # noqa: E402

from recbole_flr.model.latent_reasoning import FactorizedLatentReasoning  # noqa: E402

#: (windows per batch, history length, share of real positions); the amazon-games shares are not measured
SHAPES = {"ml-1m": (47, 50, None), "amazon-games": (310, 20, None), "amazon-games-mini": (380, 20, 0.27)}


def module_at(revision):
    source = subprocess.run(
        ["git", "show", f"{revision}:recbole_flr/model/latent_reasoning.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(f"latent_reasoning_{revision}", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(f.name)
    return module.FactorizedLatentReasoning


def fwd_bwd(module, hidden, mask, norm):
    start = time.thread_time()
    rows, steps = mask.nonzero(as_tuple=True)
    if hasattr(module, "forward_at"):
        out = module.forward_at(hidden, mask, rows, steps, norm[rows, steps])
    else:  # before forward_at: every position, then the real ones
        out = module.forward_positions(hidden, mask, norm)
        out = {key: getattr(out, key)[rows, steps] for key in ("thought", "factors", "attention", "gates", "all_gates")}
        out = argparse.Namespace(**out)
    (out.thought.sum() + out.attention.square().sum() + out.factors.sum()).backward()
    return time.thread_time() - start, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="git revision of the module to compare with")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--n_factors", type=int, default=4)
    parser.add_argument("--latent_steps", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dims = (args.hidden_size, args.n_factors, args.latent_steps)
    current, other = FactorizedLatentReasoning(*dims), module_at(args.against)(*dims)
    for param in current.parameters():
        torch.nn.init.normal_(param, std=0.1)
    other.load_state_dict(current.state_dict())
    rows = []
    for dataset, (batch, length, real) in SHAPES.items():
        hidden = torch.randn(batch, length, args.hidden_size, requires_grad=True)
        lengths = torch.randint(1, length + 1, (batch,))  # uniform: about half the positions real
        if real is not None:  # short histories: lengths 1..2 * real * length, uniform
            lengths = torch.randint(1, round(2 * real * length) + 1, (batch,))
        mask = torch.arange(length)[None] < lengths[:, None]
        norm = torch.rand(batch, length) + 0.5
        times, first = {"current": [], args.against: []}, {}
        for step in range(args.steps + 1):
            for name, module in (("current", current), (args.against, other)):
                seconds, out = fwd_bwd(module, hidden, mask, norm)
                if step:
                    times[name].append(seconds)
                else:  # the warm-up step's outputs show that both compute the same thing
                    first[name] = out
        diff = max(
            (getattr(first["current"], key) - getattr(first[args.against], key)).abs().max().item()
            for key in ("thought", "factors", "attention", "gates", "all_gates")
        )
        median = {name: statistics.median(values) for name, values in times.items()}
        rows.append(
            {
                "shape": dataset,
                "windows": batch,
                "length": length,
                "max_abs_diff": diff,
                "median_s": median,
                "speedup": median[args.against] / median["current"],
            }
        )
    print(
        f"forward + backward of the latent module at every real position, median of {args.steps} "
        f"(one thread's CPU time), "
        f"D={args.hidden_size} K={args.n_factors} T={args.latent_steps}, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'shape':<14}{'B x L':>9}{'current s':>11}{args.against + ' s':>12}{'speed-up':>10}{'max |diff|':>12}")
    for r in rows:
        print(
            f"{r['shape']:<14}{r['windows']:>5} x {r['length']:<3}{r['median_s']['current']:>9.4f}"
            f"{r['median_s'][args.against]:>12.4f}{r['speedup']:>9.2f}x{r['max_abs_diff']:>12.1e}"
        )
    out = os.path.join(RESULTS, "latent_module.json")
    with open(out, "w") as f:
        json.dump(
            {
                "command": "python benchmarks/research/latent_module.py " + " ".join(sys.argv[1:]),
                "load_avg_1min": os.getloadavg()[0],
                "rows": rows,
            },
            f,
            indent=1,
        )
    print(f"wrote {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    main()
