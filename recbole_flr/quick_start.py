"""
recbole_flr.quick_start
#######################
RecBole's quick-start API (``run``, ``run_recbole``, ``load_data_and_model``) for the plugin's models and every
RecBole model.

NOTE:
    ``recbole.quick_start`` imports ray at module level and calls ``get_flops``, which deep-copies the model (an LLM
    twice in memory); this module imports neither. Otherwise the steps, seeds and logs are RecBole's.
"""

import os
import shlex
import sys
import time
from collections.abc import MutableMapping
from logging import getLogger

import torch
import torch.distributed as dist
from recbole.data import data_preparation
from recbole.utils import get_environment, init_seed, set_color

from recbole_flr.checkpoint import load_checkpoint, load_model_state
from recbole_flr.config import Config, check_model_fits_data, training_plan, validate
from recbole_flr.errors import CheckpointError, UserInputError
from recbole_flr.model.all_positions import compact_train_data
from recbole_flr.run_files import (
    FILE_ONLY,
    init_run_logger,
    make_run_folders,
    new_run_name,
    plain_run_result,
    result_file,
    result_record,
    write_result_file,
)
from recbole_flr.trainer import get_trainer
from recbole_flr.utils import ensure_dataset, get_model, load_dataset


def run(
    model,
    dataset,
    config_file_list=None,
    config_dict=None,
    saved=True,
    nproc=1,
    world_size=-1,
    ip="localhost",
    port="5678",
    group_offset=0,
):
    r"""Train and test one model on one dataset, in this process or in ``nproc`` spawned processes (RecBole's DDP).

    Returns:
        dict: as :func:`run_recbole_flr` (from rank 0 when several processes run).
    """
    if nproc == 1 and world_size <= 0:
        return run_recbole_flr(model, dataset, config_file_list, config_dict, saved)
    import torch.multiprocessing as mp

    _check_nproc(nproc, (config_dict or {}).get("gpu_id"))
    paths = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    validate(paths)  # once, before spawning: a bad setting stops here with one message
    make_run_folders(paths)
    world_size = nproc if world_size == -1 else world_size
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset})
    kwargs = {"config_dict": config_dict, "queue": queue, "saved": saved}
    mp.spawn(run_recbole_flrs, args=(model, dataset, config_file_list, kwargs), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def _check_nproc(nproc, gpu_id):
    r"""Fail before spawning when ``nproc`` processes cannot each get a device (a GPU each, or a CPU core each)."""
    on_gpu = torch.cuda.is_available() and gpu_id != ""
    available = torch.cuda.device_count() if on_gpu else os.cpu_count()
    if nproc < 1 or nproc > available:
        kind = "GPUs" if on_gpu else "CPU cores (no GPU: the processes use gloo on the CPU)"
        raise UserInputError(f"--nproc={nproc} is not in [1, {available}]: this machine has {available} {kind}.")


def run_recbole_flr(
    model=None,
    dataset=None,
    config_file_list=None,
    config_dict=None,
    saved=True,
    queue=None,
    time_budget=None,
    callbacks=(),
):
    r"""Train, validate and test a model: the plugin's counterpart of ``recbole.quick_start.run_recbole``.

    Args:
        model (str, optional): model name (``FLR``, or any RecBole model such as ``SASRec``).
        dataset (str, optional): dataset name.
        config_file_list (list, optional): YAML files.
        config_dict (dict, optional): parameters, overriding the YAML files. ``resume_from`` (any model; also a YAML
            key or ``--resume_from=``) continues an interrupted run from its ``<best>-last.pth`` checkpoint: give the
            same settings. The resumed run is a new run with its own files, starting from a copy of the interrupted
            run's best model; the files resumed from are only read.
        saved (bool, optional): whether to write the checkpoints and the result file, and test the best model (else
            the last weights are tested and nothing is written to ``checkpoint_dir``). Defaults to ``True``.
        queue (torch.multiprocessing.Queue, optional): where rank 0 puts the result when spawned.
        time_budget (float, optional): seconds of training after which the trainer stops at the end of the batch
            that spends them (the epoch is validated as usual); the trainer's ``time_budget``. None: no limit.
        callbacks (sequence, optional): functions ``callback(event, info)`` given to the trainer's ``add_callback``
            (a "prepared" event with the trainer and the three dataloaders first; then stages, epochs, validations,
            evaluations, the end of ``fit``).

    Returns:
        dict: ``best_valid_score`` (float), ``valid_score_bigger``, ``best_valid_result`` and ``test_result`` (dicts
        of metric -> float, None when not run), ``saved_model_file``, ``best_epoch`` (the epoch of the tested weights,
        None when unknown), ``log_file`` and ``result_file`` (``saved_model_file`` with ``.json``); the files are
        None when not saved. The run's files share one name (:mod:`recbole_flr.run_files`).
    """
    started = time.time()
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    validate(config)  # unknown keys, documented ranges, valid_metric, FLR's stages: before any log or training
    init_seed(config["seed"], config["reproducibility"])
    make_run_folders(config, checkpoint_dir=saved)  # the log and checkpoint folders exist and can be written
    run_name = new_run_name(config)
    log_file = init_run_logger(config, run_name)
    logger = getLogger()
    logger.info(training_plan(config))
    logger.info(f"Log file: {log_file}")
    logger.info(sys.argv, extra=FILE_ONLY)
    logger.info(config, extra=FILE_ONLY)
    logger.info(
        f"Settings given (files, config_dict, command line; the full config is in the log file): {_given(config)}"
    )

    _, model, _, train_data, valid_data, test_data = prepare(config=config, log=True)
    logger.info(model, extra=FILE_ONLY)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(f"{type(model).__name__}: {trainable} trainable parameters (the structure is in the log file)")
    train_data = compact_train_data(train_data, model)  # all-positions training: only the rows it trains on

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    named = hasattr(trainer, "last_model_file")  # the plugin's trainers: the checkpoint carries the run's name
    if named:
        trainer.saved_model_file = os.path.join(trainer.checkpoint_dir, f"{run_name}.pth")
    if time_budget or callbacks:
        if not hasattr(trainer, "add_callback"):
            raise UserInputError(f"{type(trainer).__name__} (RecBole's trainer of {model}) has no budget or callbacks.")
        trainer.time_budget = time_budget
        for callback in callbacks:
            trainer.add_callback(callback)
            callback(
                "prepared",
                {"trainer": trainer, "train_data": train_data, "valid_data": valid_data, "test_data": test_data},
            )
    if config["resume_from"]:  # an interrupted run's <best>-last.pth: README, "Resuming"
        trainer.resume_checkpoint(config["resume_from"])
    if saved and named:
        logger.info(
            f"Checkpoints: the best model goes to {trainer.saved_model_file}; the state after every epoch to "
            f"{trainer.last_model_file} (to continue a killed run: the same command with "
            f"--resume_from={shlex.quote(trainer.last_model_file)}); the result file "
            f"{result_file(trainer.saved_model_file)}."
        )
    try:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"]
        )
    except KeyboardInterrupt:  # Ctrl-C: say how to go on (the state of the last finished epoch is on disk)
        last = trainer.last_model_file if saved and named else None
        if last and os.path.isfile(last):
            logger.error(f"Interrupted. To continue: the same command with --resume_from={shlex.quote(last)}")
        else:
            logger.error("Interrupted before the first epoch ended: no checkpoint to resume from.")
        raise
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    logger.info(
        "The running environment of this training is as follows:\n" + get_environment(config).draw(), extra=FILE_ONLY
    )
    best_valid_score, best_valid_result, test_result = plain_run_result(
        best_valid_score, best_valid_result, test_result
    )
    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file if saved else None,
        "best_epoch": getattr(trainer, "best_epoch", None),
        "log_file": log_file,
        "result_file": result_file(trainer.saved_model_file) if saved and named else None,
    }
    logger.info(set_color("best valid ", "yellow") + f": {_metrics(best_valid_result)}")
    logger.info(set_color("test result", "yellow") + f": {_metrics(test_result)}")
    if result["result_file"] and (config["single_spec"] or config["local_rank"] == 0):
        record = result_record(config, result, trainer, log_file, started, config["resume_from"])
        try:
            write_result_file(result["result_file"], record)
            logger.info(f"Result file: {result['result_file']}")
        except CheckpointError as error:  # the metrics are known and the checkpoint is on disk: report, go on
            logger.error(f"No result file: {error}")
            result["result_file"] = None
    if not config["single_spec"]:
        dist.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


def _given(config):
    given = {k: v for k, v in config.external_config_dict.items() if k not in ("model", "dataset")}
    return ", ".join(f"{key}={value}" for key, value in given.items()) or "none (all defaults)"


def _metrics(result):
    return "none" if result is None else ", ".join(f"{metric}: {value:.6g}" for metric, value in result.items())


def prepare(model=None, dataset=None, config_file_list=None, config_dict=None, config=None, log=False):
    r"""Build what a run trains and tests, in RecBole's quick-start order: the config, the seed, the dataset (downloaded
    if it is one of RecBole's and missing), the dataloaders, the seed again (plus ``local_rank``), then the model on
    the config's device. :func:`run_recbole_flr`, :func:`load_data_and_model`, the tests and the benchmarks all build
    through here.

    Args:
        model (str, optional): model name (``FLR``, or any RecBole model).
        dataset (str, optional): dataset name.
        config_file_list (list, optional): YAML files.
        config_dict (dict, optional): parameters, overriding the YAML files.
        config (Config, optional): an existing config; the four arguments above are then ignored.
        log (bool): log the dataset through RecBole's logger (``init_logger`` first).

    Returns:
        tuple: (config, model, dataset, train_data, valid_data, test_data); the model is freshly initialised.
    """
    if config is None:
        config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    ensure_dataset(config)
    dataset = load_dataset(config)
    check_model_fits_data(config, dataset)
    if log:
        getLogger().info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    return config, model, dataset, train_data, valid_data, test_data


def run_recbole_flrs(rank, *args):
    r"""Entry point of one spawned process: ``args`` are (model, dataset, config_file_list, kwargs)."""
    kwargs = args[-1]
    if not isinstance(kwargs, MutableMapping):
        raise ValueError(f"The last argument of run_recbole_flrs should be a dict, but got {type(kwargs)}")
    kwargs["config_dict"] = dict(kwargs.get("config_dict") or {}, local_rank=rank)
    run_recbole_flr(*args[:3], **kwargs)


def load_data_and_model(model_file, weights_only=True, data_path=None):
    r"""Rebuild the config, dataset, dataloaders and trained model of a checkpoint (RecBole's
    ``load_data_and_model``).

    Args:
        model_file (str): a checkpoint written by a recbole_flr trainer.
        weights_only (bool): passed to ``torch.load``. ``False`` also reads checkpoints of RecBole's own trainer,
            which pickle a Config object: only for files you trust.
        data_path (str, optional): the folder that holds the dataset's folder, when it is no longer where the run
            read it (the checkpoint's ``data_path``).

    Returns:
        tuple: (config, model, dataset, train_data, valid_data, test_data)
    """
    checkpoint = load_checkpoint(model_file, weights_only=weights_only)
    config = checkpoint["config"]
    if isinstance(config, dict):
        config = dict(config, **({"data_path": data_path} if data_path else {}))
        # exactly the saved run: RecBole's Config would also read this process's --key=value arguments
        argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            config = Config(model=config["model"], dataset=config["dataset"], config_dict=config)
        finally:
            sys.argv = argv
    make_run_folders(config, checkpoint_dir=False)  # loading writes no checkpoint
    # a log of its own: RecBole's init_logger did nothing after a run in this process, whose log then got the load's
    init_run_logger(config, f"{new_run_name(config)}-load")
    getLogger().info(config)
    _, model, dataset, train_data, valid_data, test_data = prepare(config=config, log=True)
    load_model_state(model, checkpoint, model_file)
    model.eval()
    return config, model, dataset, train_data, valid_data, test_data
