"""
recbole_flr.utils
#################
The model lookup (models in ``recbole_flr`` first, then RecBole's; trainers: :func:`recbole_flr.trainer.get_trainer`)
and the fixes that RecBole 1.2.1 needs on today's stack (numpy 2, torch >= 2.6, offline machines).
"""

import importlib
import os
import shutil
import warnings
import zipfile
from logging import getLogger

import numpy as np
import recbole
import yaml
from recbole.utils import get_model as recbole_get_model

import recbole_flr.data_checks as data_checks
from recbole_flr.errors import DatasetNotFoundError, UserInputError  # noqa: F401  (DatasetNotFoundError: re-exported)


def no_anomaly_detection():
    r"""Switch off the autograd anomaly detection that RecBole 1.2.1 switches on for everyone.

    ``recbole/model/sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)`` when it is
    imported, and importing any RecBole sequential model (SASRec, BERT4Rec, ... or RecBole's own ``get_model``) imports
    that package. From then on every backward pass checks every gradient for NaN (an ``isnan`` and an ``any`` per
    autograd node, ~40 % of an FLR training step on a CPU; see docs/research_log.md) and records a traceback per
    forward op. The package is imported here first, then the switch is turned off, once, at ``import recbole_flr``;
    to debug with it, call ``torch.autograd.set_detect_anomaly(True)`` after importing recbole_flr.
    """
    import recbole.model.sequential_recommender  # noqa: F401  (runs sine.py's module-level switch now)
    import torch

    torch.autograd.set_detect_anomaly(False)


def quiet_recbole_warnings():
    r"""Hide the deprecation warnings that RecBole 1.2.1's own code triggers on today's torch (``torch.cuda.amp.
    GradScaler`` every epoch, ...): the user can do nothing about them. Only warnings attributed to RecBole's modules
    are filtered; the user's code and the plugin's keep theirs."""
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"recbole\.")


def numpy_compat():
    r"""Restore the numpy aliases that RecBole 1.2.1 uses and numpy 2 removed.

    RecBole's ``Config.compatibility_settings`` assigns ``np.float = np.float_`` and the like; numpy 2 removed
    ``np.float_``, ``np.complex_`` and ``np.unicode_``, so that line raises ``AttributeError`` before any model
    runs. RecBole's code still reads ``np.bool``, ``np.long``, ``np.float`` (metrics, layers, dataset), so the
    old names are set to their numpy-2 equivalents. Idempotent.
    """
    aliases = {
        "bool": np.bool_,
        "int": np.int_,
        "float": np.float64,
        "complex": np.complex128,
        "object": np.object_,
        "str": np.str_,
        "long": np.int_,
        "unicode": np.str_,
        "float_": np.float64,
        "complex_": np.complex128,
        "unicode_": np.str_,
    }
    for name, value in aliases.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def get_model(model_name):
    r"""Find a model class: ``recbole_flr.model`` first, then RecBole's model zoo.

    Args:
        model_name (str): model name, e.g. ``FLR`` or ``SASRec``.

    Returns:
        type: the model class.
    """
    plugin_models = importlib.import_module("recbole_flr.model")
    if hasattr(plugin_models, model_name):
        return getattr(plugin_models, model_name)
    try:
        return recbole_get_model(model_name)
    except (ValueError, ModuleNotFoundError, AttributeError) as error:
        # RecBole's lookup ends in its exlib package, which imports xgboost/lightgbm: an unknown name then
        # surfaces as their ModuleNotFoundError; a name in the wrong case (sasrec) finds the module but not the class
        known = ", ".join(plugin_models.__all__)
        names = [os.path.basename(path)[: -len(".yaml")] for path in _model_yaml_files()] + plugin_models.__all__
        same = [name for name in names if name.lower() == str(model_name).lower()]
        raise UserInputError(
            f"Unknown model [{model_name}]: it is neither a recbole_flr model ({known}) nor a RecBole model "
            "(see https://recbole.io/model_list.html for the names, e.g. SASRec, BERT4Rec, GRU4Rec)"
            + (f"; names are case-sensitive: did you mean '{same[0]}'" if same else "")
            + (f"; RecBole's lookup also said: {error}" if isinstance(error, ModuleNotFoundError) else ".")
        ) from None


def _model_yaml_files():
    import glob

    return glob.glob(os.path.join(os.path.dirname(os.path.realpath(recbole.__file__)), "properties", "model", "*.yaml"))


def _atomic_files_hint(dataset, folder):
    return (
        f"Provide RecBole atomic files as {os.path.join(folder, dataset + '.inter')} (and optionally .item/.user), "
        f"or point --data_path at the folder that holds '{dataset}/' "
        "(see https://recbole.io/atomic_files.html for the format)."
    )


def ensure_dataset(config):
    r"""Make sure ``config['data_path']`` holds the dataset, downloading RecBole's named datasets if needed.

    RecBole 1.2.1 downloads inside ``create_dataset`` and then calls ``torch.distributed.barrier()`` even in a
    single process, and an offline machine ends in a urllib traceback. This does the download here, once, and
    turns every failure into one :class:`DatasetNotFoundError` that names the dataset, the folder searched and
    how to provide the files.

    Args:
        config (Config): the run's config (``dataset``, ``data_path``, ``local_rank``).
    """
    dataset, folder = config["dataset"], config["data_path"]
    if os.path.isdir(folder):
        check_interaction_file(config)
        return
    with open(os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", "url.yaml")) as f:
        urls = yaml.safe_load(f)
    if dataset not in urls:
        raise DatasetNotFoundError(
            f"Dataset [{dataset}] not found: the folder {folder} does not exist and [{dataset}] is not one of "
            f"RecBole's downloadable datasets. " + _atomic_files_hint(dataset, folder)
        )
    if config["local_rank"] not in (None, 0):
        return  # rank 0 downloads; RecBole's own barrier in create_dataset is not reached as the folder exists
    from recbole.utils.url import download_url, extract_zip, rename_atomic_files

    logger = getLogger()
    logger.info(f"Dataset [{dataset}] is not in {folder}: downloading it from RecBole's mirror.")
    try:
        os.makedirs(folder)
        path = download_url(urls[dataset], folder)
        extract_zip(path, folder)
        os.unlink(path)
        rename_atomic_files(folder, os.path.splitext(os.path.basename(path))[0], dataset)
    except (OSError, RuntimeError, zipfile.BadZipFile) as error:  # urllib's URLError is an OSError
        shutil.rmtree(folder, ignore_errors=True)  # it did not exist before: leave no half-downloaded dataset
        raise DatasetNotFoundError(
            f"Dataset [{dataset}] not found in {folder} and its download failed ({error}). "
            + _atomic_files_hint(dataset, folder)
        ) from None


def check_interaction_file(config):
    r"""Fail early, naming the file and the column, when ``<dataset>.inter`` cannot make a sequential dataset.

    RecBole reports an empty file as a pandas parsing error and silently skips a ``load_col`` column the file lacks,
    failing much later (or, for the time field, ordering nothing). Only the header and the first row are read.

    Args:
        config (Config): the run's config.
    """
    if config["benchmark_filename"]:
        return  # pre-split files <dataset>.<part>.inter: RecBole checks each
    path = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"Dataset [{config['dataset']}]: {path} does not exist. "
            + _atomic_files_hint(config["dataset"], config["data_path"])
        )
    data_checks.check_encoding(config, [path])
    with open(path, encoding=config["encoding"] or "utf-8", errors="replace") as f:
        header, first_row = f.readline().rstrip("\n"), f.readline().strip()
    if not header:
        raise UserInputError(
            f"{path} is empty: it needs a header line such as 'user_id:token<TAB>item_id:token' and rows."
        )
    columns = [name for name, _ in data_checks.check_header(path, header, config)]
    required = [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]]
    if config["eval_args"]["order"] == "TO":
        required.append(config["TIME_FIELD"])
    load_col = (config["load_col"] or {}).get("inter") if isinstance(config["load_col"], dict) else None
    for column in required:
        if column not in columns:
            raise UserInputError(
                f"{path} has no column '{column}' (columns: {columns}); it is required as "
                + ("TIME_FIELD by eval_args order: TO" if column == config["TIME_FIELD"] else "a user or item id")
                + ". Rename the column in the file or set USER_ID_FIELD/ITEM_ID_FIELD/TIME_FIELD."
            )
        if load_col is not None and column not in load_col:
            raise UserInputError(f"load_col['inter'] = {load_col} leaves out the required column '{column}' of {path}.")
    if not first_row:
        raise UserInputError(f"{path} has a header but no interactions.")
    data_checks.check_atomic_files(config)


def load_dataset(config):
    r"""RecBole's ``create_dataset``; when pandas cannot parse an atomic file, one error naming the file and line;
    then the checks of :func:`recbole_flr.data_checks.check_loaded_dataset`.

    Args:
        config (Config): the run's config.

    Returns:
        Dataset: RecBole's dataset.
    """
    from recbole.data import create_dataset

    try:
        dataset = create_dataset(config)
    except (ValueError, TypeError, pd_errors().ParserError) as error:
        problem = find_bad_atomic_line(config)
        if problem is None:
            raise  # not a parse error of the user's file: keep the traceback
        raise UserInputError(f"{problem} (pandas said: {str(error).splitlines()[0][:200]})") from error
    data_checks.check_loaded_dataset(config, dataset)
    return dataset


def pd_errors():
    import pandas

    return pandas.errors


def find_bad_atomic_line(config):
    r"""The first line of the dataset's atomic files (``.inter``, ``.item``, ``.user``) that RecBole cannot read: a
    wrong number of fields, a ``:float`` field that is not a number, or a field starting with a double quote.

    Returns:
        str or None: what is wrong, where, and what to change; None if every line reads.
    """
    separator = config["field_separator"] or "\t"
    for suffix in ("inter", "item", "user"):
        path = os.path.join(config["data_path"], f"{config['dataset']}.{suffix}")
        if not os.path.isfile(path):
            continue
        with open(path, encoding=config["encoding"] or "utf-8", errors="replace") as f:
            header = f.readline().rstrip("\r\n").split(separator)
            types = [column.split(":", 1)[1] if ":" in column else "" for column in header]
            for number, line in enumerate(f, start=2):
                fields = line.rstrip("\r\n").split(separator)
                if fields == [""]:
                    continue
                if len(fields) != len(header):
                    return (
                        f"{path}, line {number}: {len(fields)} fields where the header has {len(header)} "
                        f"({separator!r}-separated); remove the extra separators or fill the missing "
                        "fields."
                    )
                for column, kind, value in zip(header, types, fields):
                    if value.startswith('"') and not (len(value) > 1 and value.endswith('"')):
                        return (
                            f"{path}, line {number}: the field {column} starts with a double quote "
                            f"({value[:40]!r}), which the CSV reader takes as an opening quote that runs into the "
                            "next lines; remove the quote or put the text without quotes."
                        )
                    if kind == "float" and value.strip():
                        try:
                            float(value)
                        except ValueError:
                            fix = (
                                "write the times as numbers, e.g. unix seconds"
                                if column.split(":")[0] == config["TIME_FIELD"]
                                else "change the value, or declare the column :token"
                            )
                            return (
                                f"{path}, line {number}: {column} is {value!r}, not a number; a :float column "
                                f"holds numbers only ({fix})."
                            )
    return None
