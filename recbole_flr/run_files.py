"""
recbole_flr.run_files
#####################
The files of one run, all named by the run's one name ``<model>-<dataset>-<time>-<random>``:

- ``log/<model>/<run>.log``: the log (the full config too; the console shows a shorter version);
- ``log_tensorboard/<run>/``: TensorBoard (RecBole names it after the log file);
- ``<checkpoint_dir>/<run>.pth`` and ``<run>-last.pth``: the best model and the resumable state (the trainers);
- ``<checkpoint_dir>/<run>.json``: the result file (:func:`write_result_file`).

NOTE:
    RecBole 1.2.1 names the log file ``<model>-<dataset>-<time>-<hash of the config>``, so two runs with the same
    settings started in the same second share one log file and one TensorBoard folder, and the checkpoint (named by
    the trainer, at another second) matches neither. Its ``init_logger`` also calls ``logging.basicConfig``, which does
    nothing once the root logger has handlers: the second run of a process (a hyper-parameter search) logged into the
    first run's file. Here each run replaces the previous run's handlers.
"""

import json
import logging
import math
import os
import tempfile
import time
import uuid

import colorlog
import torch
from recbole.utils import get_local_time
from recbole.utils.logger import RemoveColorFilter, log_colors_config

from recbole_flr.checkpoint import atomic_write, last_checkpoint_file, plain_config, plain_result
from recbole_flr.errors import UserInputError

LOG_ROOT = "log"
TENSORBOARD_ROOT = "log_tensorboard"  # RecBole's get_tensorboard
#: ``logger.info(message, extra=FILE_ONLY)``: a record for the log file only (the full config, the model's structure)
FILE_ONLY = {"file_only": True}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_LEVELS["critical"] = logging.CRITICAL


def new_run_name(config):
    r"""The run's name, ``<model>-<dataset>-<time>-<6 random hex digits>``; in distributed mode rank 0's, for every
    rank."""
    name = f"{config['model']}-{config['dataset']}-{get_local_time()}-{uuid.uuid4().hex[:6]}"
    if not config["single_spec"]:
        names = [name]
        torch.distributed.broadcast_object_list(names, src=0)
        name = names[0]
    return name


def make_run_folders(config, checkpoint_dir=True):
    r"""Create ``log/<model>``, ``log_tensorboard`` and (``checkpoint_dir``) the config's ``checkpoint_dir`` if missing,
    and check that a file can be written in each, before anything is loaded or trained.

    RecBole creates them with a check-then-mkdir that races: of two runs started at once in one folder (side-by-side
    benchmarks, DDP processes), one died with ``FileExistsError``; once they exist, RecBole's check passes. A folder
    that is a file, or that this user cannot write, failed later with a traceback (a read-only ``checkpoint_dir``: at
    the end of the first epoch, without the path).

    Raises:
        UserInputError: a folder that cannot be created or written, named with the key that sets it.
    """
    folders = [(os.path.join(LOG_ROOT, config["model"]), "log"), (TENSORBOARD_ROOT, "log")]
    if checkpoint_dir and not config["checkpoint_dir"]:
        raise UserInputError(
            f"checkpoint_dir is {config['checkpoint_dir']!r} (~ or empty): set it to the folder for the run's "
            "checkpoints and result file (RecBole's default: saved)."
        )
    if checkpoint_dir:
        folders.append((config["checkpoint_dir"], "checkpoint_dir"))
    for folder, key in folders:
        try:
            os.makedirs(folder, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
            os.close(handle)
            os.remove(probe)
        except OSError as error:
            reason = "it is a file, not a folder" if os.path.isfile(folder) else f"{error.strerror or error}"
            if key == "checkpoint_dir":
                where = f"checkpoint_dir {folder!r} (absolute: {os.path.abspath(folder)})"
                advice = "set checkpoint_dir to a folder this user can write"
            else:
                where = f"the log folder {os.path.abspath(folder)} (RecBole writes logs under the working directory)"
                advice = "run from a folder this user can write"
            raise UserInputError(f"Cannot write in {where}: {reason}. The run needs it: {advice}.") from None


def init_run_logger(config, run_name):
    r"""RecBole's ``init_logger``, with the log file named by the run (``log/<model>/<run>.log``) and records marked
    :data:`FILE_ONLY` kept off the console. Replaces the handlers of a previous run of this process (and RecBole's);
    leaves any other handler alone. In distributed mode, rank ``k > 0`` logs to ``<run>-rank<k>.log``, created only
    when it logs something (RecBole sets those ranks' ``state`` to ``error``).

    Returns:
        str: the log file (absolute).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "recbole_flr_run", False) or any(isinstance(f, RemoveColorFilter) for f in handler.filters):
            root.removeHandler(handler)
            handler.close()
        elif type(handler) is logging.StreamHandler and isinstance(handler.formatter, colorlog.ColoredFormatter):
            root.removeHandler(handler)  # RecBole's console handler of an earlier init_logger
    level = _LEVELS.get(str(config["state"]).lower(), logging.INFO)
    rank = config["local_rank"] or 0
    name = run_name if rank == 0 else f"{run_name}-rank{rank}"
    log_file = os.path.abspath(os.path.join(LOG_ROOT, config["model"], f"{name}.log"))
    file_handler = logging.FileHandler(log_file, delay=rank != 0)
    file_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s", "%a %d %b %Y %H:%M:%S"))
    file_handler.addFilter(RemoveColorFilter())
    console = logging.StreamHandler()
    if console.stream.isatty():
        console.setFormatter(
            colorlog.ColoredFormatter(
                "%(log_color)s%(asctime)-15s %(levelname)s  %(message)s", "%d %b %H:%M", log_colors=log_colors_config
            )
        )
    else:  # redirected (2> run.log, a pipe, a job scheduler's file): no colour codes
        console.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s", "%d %b %H:%M"))
        console.addFilter(RemoveColorFilter())
    console.addFilter(lambda record: not getattr(record, "file_only", False))
    for handler in (console, file_handler):  # RecBole's order: TensorBoard is named after the first file handler
        handler.setLevel(level)
        handler.recbole_flr_run = True
        root.addHandler(handler)
    root.setLevel(level)
    return log_file


def result_record(config, result, trainer, log_file, started, resumed_from):
    r"""The result file's content: what ran, on what, with which settings, and what it gave, as plain data."""
    saved = result["saved_model_file"]
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "valid_metric": config["valid_metric"].lower(),
        "best_valid_score": _finite(result["best_valid_score"]),
        "best_epoch": result.get("best_epoch"),
        "best_stage": getattr(trainer, "best_stage", None),
        "best_valid_result": result["best_valid_result"],
        "test_result": result["test_result"],
        "checkpoint": os.path.abspath(saved) if saved else None,
        "last_checkpoint": os.path.abspath(last_checkpoint_file(saved)) if saved else None,
        "log_file": log_file,
        "tensorboard_dir": _tensorboard_dir(trainer),
        "resumed_from": os.path.abspath(resumed_from) if resumed_from else None,
        "settings": {k: v for k, v in plain_config(config).items() if k != "resume_from"},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_time_s": round(time.time() - started, 3),
    }


def result_file(saved_model_file):
    r"""The result file of a run: its best checkpoint's name with ``.json`` instead of ``.pth``."""
    return os.path.splitext(saved_model_file)[0] + ".json"


def write_result_file(path, record):
    r"""Write ``record`` as JSON to ``path``, atomically (a :class:`~recbole_flr.errors.CheckpointError` naming the
    file when it cannot be written)."""
    text = json.dumps(record, indent=1, allow_nan=False) + "\n"

    def write(tmp_path):
        with open(tmp_path, "w") as f:
            f.write(text)

    atomic_write(path, write)


def plain_run_result(best_valid_score, best_valid_result, test_result):
    r"""RecBole's results (``OrderedDict`` of ``np.float64``, plain floats after a resume, dicts in distributed mode)
    in one form: a float and dicts of metric -> float (None when there is none)."""
    score = None if best_valid_score is None else float(best_valid_score)
    return score, plain_result(best_valid_result), plain_result(test_result)


def result_table(result, model=None, dataset=None):
    r"""The console's summary of a run: best valid and test metrics side by side, then the files it wrote.

    Args:
        result (dict): what :func:`recbole_flr.quick_start.run_recbole_flr` returns.
    """
    valid, test = result.get("best_valid_result") or {}, result.get("test_result") or {}
    metrics = list(valid) + [m for m in test if m not in valid]
    epoch = result.get("best_epoch")
    title = " ".join(part for part in (model, "on" if model and dataset else None, dataset) if part)
    lines = [f"{title} (the tested model: epoch {epoch})" if epoch is not None else title or "results"]
    width = max([len("metric")] + [len(m) for m in metrics])
    lines.append(f"{'metric':<{width}}  {'best valid':>10}  {'test':>10}")
    for metric in metrics:
        lines.append(f"{metric:<{width}}  {_number(valid.get(metric)):>10}  {_number(test.get(metric)):>10}")
    if not metrics:
        lines.append("(no valid or test metrics: validation and test did not run)")
    elif not test:
        lines.append("(not tested: the test set is empty)")
    for label, key in (("checkpoint", "saved_model_file"), ("result file", "result_file"), ("log", "log_file")):
        if result.get(key):
            lines.append(f"{label + ':':<12} {result[key]}")
    return "\n".join(lines)


def _number(value):
    return "-" if value is None else f"{value:.6g}"


def _finite(value):
    return value if value is None or math.isfinite(value) else None


def _tensorboard_dir(trainer):
    writer = getattr(trainer, "tensorboard", None)
    folder = getattr(writer, "log_dir", None) or (writer.get_logdir() if hasattr(writer, "get_logdir") else None)
    return os.path.abspath(folder) if folder else None
