"""
recbole_flr.config
##################
RecBole's :class:`~recbole.config.Config` with the plugin's models and default properties.
"""

import difflib
import glob
import math
import os
import re
from functools import lru_cache

import recbole
import torch
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_flr.checkpoint import plain_config
from recbole_flr.errors import UserFileNotFoundError, UserInputError
from recbole_flr.utils import get_model, numpy_compat

PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "properties")
RECBOLE_PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.realpath(recbole.__file__)), "properties")


class Config(RecBoleConfig):
    r"""RecBole's Config, resolving model names through :func:`recbole_flr.utils.get_model`.

    The plugin's ``properties/dataset/<dataset>.yaml`` and ``properties/model/<Model>.yaml`` are loaded as internal
    defaults after RecBole's own (so they win over RecBole's defaults for the same model or dataset), and user
    YAML files, ``config_dict`` and ``--key=value`` still override them in RecBole's documented order:
    command line > config_dict > config files > plugin defaults > RecBole defaults.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        self.key_sources = {}  # key -> where the user set it (a YAML file, config_dict, the command line)
        try:
            super().__init__(model, dataset, config_file_list, config_dict)
        except UserInputError:
            raise
        except (ValueError, TypeError, KeyError, SyntaxError) as error:
            # RecBole's Config checks only the user's settings (topk, eval_args, duplicate --key=value, ...)
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise UserInputError(f"RecBole's Config refused the settings: {message}") from error

    def compatibility_settings(self):
        numpy_compat()

    def _load_cmd_line(self):
        r"""RecBole's ``--key=value`` settings, where ``--key=~`` is YAML's null (None), as ``key: ~`` is in a file:
        RecBole's reader keeps it the string ``"~"``, which would read as a path (``--llm_path=~``: the home folder)."""
        cmd_config_dict = {key: None if value == "~" else value for key, value in super()._load_cmd_line().items()}
        self.key_sources.update(dict.fromkeys(cmd_config_dict, "the command line"))
        return cmd_config_dict

    def _load_variable_config_dict(self, config_dict):
        self.key_sources.update(dict.fromkeys(config_dict or {}, "config_dict"))
        return super()._load_variable_config_dict(config_dict)

    def _load_config_files(self, file_list):
        for file in file_list or []:
            if not os.path.isfile(file):
                raise UserFileNotFoundError(
                    f"Config file {file} (from --config_files/config_file_list) does not exist."
                )
            with open(file, "r", encoding="utf-8") as f:
                try:
                    content = yaml.load(f.read(), Loader=self.yaml_loader)
                except yaml.YAMLError as error:
                    raise UserInputError(f"Config file {file} is not valid YAML: {error}") from None
            if not isinstance(content, dict):
                raise UserInputError(f"Config file {file} must hold 'key: value' lines, but it holds {content!r}.")
            for key in content:
                self.key_sources[key] = f"the config file {file}"
        return super()._load_config_files(file_list)

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if isinstance(model, str):
            model = get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for base in model_class.__mro__[1:] if model_class.__module__.startswith("recbole_flr.") else ():
            # a plugin model built on a RecBole model (SASRecAllPos on SASRec) starts from that model's defaults
            parent_file = os.path.join(RECBOLE_PROPERTIES_DIR, "model", f"{base.__name__}.yaml")
            if base.__module__.startswith("recbole.model.") and os.path.isfile(parent_file):
                self._update_internal_config_dict(parent_file)
                break
        internal = self.internal_config_dict
        if internal.get("MODEL_TYPE") == ModelType.SEQUENTIAL and internal.get("load_col") == {
            "inter": [internal["USER_ID_FIELD"], internal["ITEM_ID_FIELD"]]
        }:
            # NOTE: RecBole's default for a dataset without its own YAML loads the ids only, and its sequential
            # defaults then order by time (eval_args order: TO) without the time column. Every sequential model loads
            # what FLR loads by default: ids and timestamp (FLR.yaml adds the title, which only FLR reads).
            internal["load_col"] = {
                "inter": [internal["USER_ID_FIELD"], internal["ITEM_ID_FIELD"], internal["TIME_FIELD"]]
            }
        dataset_file = os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml")
        if os.path.isfile(dataset_file):
            dataset_keys = self._update_internal_config_dict(dataset_file) or {}
            self.parameters["Dataset"] += [key for key in dataset_keys if key not in self.parameters["Dataset"]]
        model_file = os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml")
        if os.path.isfile(model_file):
            self._update_internal_config_dict(model_file)

    def _get_final_config_dict(self):
        final_config_dict = super()._get_final_config_dict()
        # NOTE: RecBole 1.2.1's defaults contradict themselves for every CE-trained sequential model (SASRec,
        # BERT4Rec, GRU4Rec, FLR): overall.yaml samples one negative, and Config then refuses negatives with CE. Full
        # cross-entropy needs no negatives, so that is the default here unless the user set the key.
        if final_config_dict.get("loss_type") == "CE" and "train_neg_sample_args" not in self.external_config_dict:
            final_config_dict["train_neg_sample_args"] = None
        return final_config_dict

    def _init_device(self):
        gpu_id = self.final_config_dict["gpu_id"]
        if isinstance(gpu_id, tuple):
            gpu_id = ",".join(map(str, gpu_id))
        gpu_id = "" if gpu_id is None else str(gpu_id)
        if "local_rank" not in self.final_config_dict or (gpu_id and torch.cuda.is_available()):
            return super()._init_device()
        # NOTE: RecBole 1.2.1's distributed mode is CUDA-only (nccl, one gpu_id per process, cuda.set_device). On a
        # machine without a GPU, or with gpu_id empty, the processes use gloo on the CPU instead.
        self.final_config_dict["gpu_id"] = gpu_id
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
        config = self.final_config_dict
        torch.distributed.init_process_group(
            backend="gloo",
            rank=config["local_rank"] + config["offset"],
            world_size=config["world_size"],
            init_method=f"tcp://{config['ip']}:{config['port']}",
        )
        config["device"] = torch.device("cpu")
        config["single_spec"] = False
        if config["local_rank"] != 0:
            config["state"], config["show_progress"], config["verbose"] = "error", False, False

    def to_plain_dict(self):
        r"""What rebuilds this config, as plain data: :func:`recbole_flr.checkpoint.plain_config`.

        Returns:
            dict: plain YAML-like data (str, int, float, bool, None, list, dict).
        """
        return plain_config(self)


# ---------------------------------------------------------------------------------------------------- validation
# Keys that are no YAML default but that the run script or RecBole's distributed mode set or read.
RUN_KEYS = {
    "model",
    "dataset",
    "config_files",
    "nproc",
    "ip",
    "port",
    "world_size",
    "group_offset",
    "offset",
    "local_rank",
    "resume_from",
}
# RecBole documents no range for these keys; a value outside fails deep inside torch or RecBole, or means nothing.
RECBOLE_RANGES = {
    "epochs": "[0, inf)",
    "train_batch_size": "[1, inf)",
    "eval_batch_size": "[1, inf)",
    "learning_rate": "[0, inf)",  # 0: the weights stay as they are (a test of the untrained model, of DDP)
    "weight_decay": "[0, inf)",
    "stopping_step": "[0, inf)",
    "MAX_ITEM_LIST_LENGTH": "[1, inf)",
    "worker": "[0, inf)",
}
#: settings that were removed, and why: ``{(key, value): reason}``, value None for every value of the key. A removed
#: key's value that still holds (``KEPT``: what every run now does) is accepted, so old YAML files and checkpoints load.
REMOVED = {
    ("grpo_surrogate", "target_logprob"): "with group-centred advantages its gradient pointed against the reward's "
    "(cosine -0.24 to -0.31, issue 14), so it trained the latent away from the reward",
    ("grpo_surrogate", None): "the GRPO policy is the Gaussian thought policy (gaussian); the gate policy (gate) was "
    "level with a random-reward control on test (issue 14, docs/benchmarks.md)",
    ("grpo_trainable", "gate"): "it trained the gate scorer for the gate policy, which was removed (level with a "
    "random-reward control on test, issue 14, docs/benchmarks.md)",
    ("grpo_trainable", "latent+head"): "the Gaussian log-density reaches only the latent module, so the head got no "
    "GRPO gradient",
}
KEPT = {"grpo_surrogate": "gaussian"}
TYPE_ANNOTATION = re.compile(r"^([A-Za-z_]\w*):.*#\s*\(([\w ]+)\)(.*)$")
KEY_READ = re.compile(r"""config\[\s*["']([A-Za-z_]\w*)["']\s*\]""")


def _bracket(text):
    r"""The bracketed expression (``[...]`` or ``(...)``, nested) that ``text`` starts with."""
    depth = 0
    for end, char in enumerate(text):
        depth += char in "[("
        depth -= char in "])"
        if depth == 0:
            return text[: end + 1]
    return text


def _parse_range(text):
    r"""``(low, high, low_closed, high_closed)`` for a numeric interval, or the list of legal values."""
    interval = re.fullmatch(r"([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+)\s*([\])])", text.strip())
    if interval:
        return float(interval.group(2)), float(interval.group(3)), interval.group(1) == "[", interval.group(4) == "]"
    return yaml.safe_load(text)


def read_documented_keys(path):
    r"""The keys of a properties YAML file whose comment documents a type ``(int)``/``(float)``/``(bool)`` or a
    ``Range in ...``, as ``{key: (type, range or None, the comment)}``; the range as :func:`_parse_range` gives it."""
    documented = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = TYPE_ANNOTATION.match(line.rstrip())
            if not match:
                continue
            key, kind, comment = match.group(1), match.group(2).strip(), match.group(3)
            found = comment.find("Range in ")
            legal = _parse_range(_bracket(comment[found + len("Range in ") :].strip())) if found >= 0 else None
            documented[key] = (kind, legal, f"({kind}){comment.rstrip()}")
    return documented


def _properties_files(config):
    files = [
        os.path.join(RECBOLE_PROPERTIES_DIR, "overall.yaml"),
        os.path.join(RECBOLE_PROPERTIES_DIR, "dataset", "sample.yaml"),
    ]
    for base in config.model_class.__mro__:
        files.append(os.path.join(RECBOLE_PROPERTIES_DIR, "model", f"{base.__name__}.yaml"))
    files += [
        os.path.join(PROPERTIES_DIR, "dataset", f"{config.dataset}.yaml"),
        os.path.join(PROPERTIES_DIR, "model", f"{config.model}.yaml"),
    ]
    return [file for file in files if os.path.isfile(file)]


@lru_cache(maxsize=1)
def known_keys():
    r"""Every key that some model, dataset, trainer or default knows: the top-level keys of every RecBole and plugin
    properties YAML file, every ``config["key"]`` read in RecBole's and the plugin's code, and the run script's."""
    known = set(RUN_KEYS) | set(RECBOLE_RANGES) | {key for key, _ in REMOVED}
    for folder in (RECBOLE_PROPERTIES_DIR, PROPERTIES_DIR):
        for path in glob.glob(os.path.join(folder, "**", "*.yaml"), recursive=True):
            if path.endswith("url.yaml"):  # url.yaml, kg_url.yaml: dataset names, not settings
                continue
            with open(path, encoding="utf-8") as f:
                known.update(re.findall(r"^([A-Za-z_]\w*)\s*:", f.read(), flags=re.MULTILINE))
    for root in (os.path.dirname(os.path.realpath(recbole.__file__)), os.path.dirname(os.path.realpath(__file__))):
        for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True):
            with open(path, encoding="utf-8") as f:
                known.update(KEY_READ.findall(f.read()))
    return frozenset(known)


def _where(config, key):
    return config.key_sources.get(key, "the settings")


def check_unknown_keys(config):
    r"""Stop on a key that nothing reads (a typo such as ``n_factor``), naming it and the closest known key."""
    known = known_keys()
    for key in config.external_config_dict:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        close = close or [name for name in known if name.lower() == key.lower()]
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UserInputError(
            f"Unknown setting '{key}' (in {_where(config, key)}): no model, dataset, trainer or RecBole default "
            f"knows it.{hint} Every FLR key is documented in recbole_flr/properties/model/FLR.yaml."
        )


def _check_value(config, key, kind, legal, doc, source):
    value = config[key]
    shown = f"{key}={value!r}"
    if value is None:
        if isinstance(legal, tuple):  # a documented range: a number is read, and ~ would fail deep inside
            raise UserInputError(f"{key} is ~ (in {_where(config, key)}) but must be a number; {source}: {doc}")
        return  # RecBole's "~": a key's own reader decides what None means
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int" and not (number and isinstance(value, int)):
        raise UserInputError(f"{shown} (in {_where(config, key)}) must be an integer; {source}: {doc}")
    if kind == "float" and not number:
        raise UserInputError(f"{shown} (in {_where(config, key)}) must be a number; {source}: {doc}")
    if kind == "bool" and not isinstance(value, bool):
        raise UserInputError(f"{shown} (in {_where(config, key)}) must be True or False; {source}: {doc}")
    if isinstance(legal, tuple):
        low, high, low_closed, high_closed = legal
        if not number:
            raise UserInputError(f"{shown} (in {_where(config, key)}) must be a number; {source}: {doc}")
        inside = (value >= low if low_closed else value > low) and (value <= high if high_closed else value < high)
        if not inside or (isinstance(value, float) and math.isnan(value)):
            interval = f"{'[' if low_closed else '('}{low:g}, {high:g}{']' if high_closed else ')'}"
            raise UserInputError(f"{shown} (in {_where(config, key)}) is out of its range {interval}; {source}: {doc}")
    elif isinstance(legal, list):
        candidate = yaml.safe_load(value) if isinstance(value, str) and value.startswith("[") else value
        candidate = list(candidate) if isinstance(candidate, tuple) else candidate
        if candidate not in legal:
            raise UserInputError(f"{shown} (in {_where(config, key)}) is not one of {legal}; {source}: {doc}")


def check_values(config):
    r"""Check every key the user set against the type and ``Range in`` documented in its properties YAML (RecBole's
    ``overall.yaml``, the model's YAML, the plugin's FLR.yaml: a new documented key is covered without code) and
    the ranges of :data:`RECBOLE_RANGES`, and refuse a removed setting with its reason (:data:`REMOVED`); then
    ``valid_metric`` against ``metrics`` and ``topk``."""
    documented = {}
    for path in _properties_files(config):
        for key, spec in read_documented_keys(path).items():
            documented[key] = spec + (
                (
                    os.path.relpath(path, os.path.dirname(PROPERTIES_DIR))
                    if path.startswith(PROPERTIES_DIR)
                    else "recbole/" + os.path.relpath(path, os.path.dirname(RECBOLE_PROPERTIES_DIR))
                ),
            )
    for key in config.external_config_dict:
        value = config[key]
        reason = REMOVED.get((key, value if isinstance(value, str) else None)) or REMOVED.get((key, None))
        if reason and KEPT.get(key, object()) != value:
            raise UserInputError(f"{key}: {value} was removed (in {_where(config, key)}): {reason}.")
        if key in documented:
            kind, legal, doc, source = documented[key]
            _check_value(config, key, kind if kind in ("int", "float", "bool") else None, legal, doc, source)
        if key in RECBOLE_RANGES:
            kind = "float" if key in ("learning_rate", "weight_decay") else "int"
            _check_value(
                config,
                key,
                kind,
                _parse_range(RECBOLE_RANGES[key]),
                f"({kind}) Range in {RECBOLE_RANGES[key]}.",
                "recbole_flr.config.RECBOLE_RANGES",
            )
    check_valid_metric(config)


def check_valid_metric(config):
    r"""``valid_metric`` must be one of the evaluated metrics, at one of the ``topk`` cut-offs (RecBole otherwise
    fails with a bare KeyError after the first training epoch)."""
    valid_metric = config["valid_metric"]
    if not isinstance(valid_metric, str) or not valid_metric:
        raise UserInputError(f"valid_metric={valid_metric!r} must be a metric name such as 'NDCG@10' or 'AUC'.")
    metrics = config["metrics"]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics or [])
    name, _, cutoff = valid_metric.partition("@")
    if name.lower() not in [str(metric).lower() for metric in metrics]:
        raise UserInputError(
            f"valid_metric={valid_metric!r} is not evaluated: metrics is {metrics}. Add '{name}' to metrics or choose "
            f"valid_metric among them."
        )
    topk = config["topk"]
    topk = [topk] if isinstance(topk, int) else list(topk or [])
    if cutoff and (not cutoff.isdigit() or int(cutoff) not in topk):
        raise UserInputError(
            f"valid_metric={valid_metric!r} needs the cut-off {cutoff} in topk, but topk is {topk}: add it to topk "
            f"or choose valid_metric at one of {topk}."
        )


TRAIN_STAGES = (["sft"], ["grpo"], ["sft", "grpo"])


def read_train_stages(value):
    r"""FLR's ``train_stages`` as a list, from YAML or from ``--train_stages=[sft,grpo]`` (a string RecBole cannot
    eval). Raises :class:`~recbole_flr.errors.UserInputError` naming the legal lists."""
    legal = [list(stages) for stages in TRAIN_STAGES]
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if not isinstance(value, (list, tuple)) or list(value) not in legal:
        raise UserInputError(
            f"train_stages must be a list of stages in order, each at most once: one of {legal}; got {value!r}."
        )
    return list(value)


def check_stages(config):
    r"""FLR: refuse a GRPO stage that would start from an untrained model (``train_stages: [grpo]``, or ``epochs: 0``
    before it) unless ``resume_from`` names the checkpoint to start from."""
    if config["train_stages"] is None or "grpo_epochs" not in config.final_config_dict:
        return
    stages = read_train_stages(config["train_stages"])
    if "grpo" not in stages or not config["grpo_epochs"] or config["resume_from"]:
        return
    if "sft" not in stages:
        raise UserInputError(
            "train_stages=[grpo] trains GRPO alone, which starts from a trained SFT model: name it with "
            "resume_from=<the SFT run's .pth or -last.pth> (the starting checkpoint), or set train_stages: [sft, grpo]."
        )
    if config["epochs"] == 0:
        raise UserInputError(
            "epochs=0 trains no SFT epoch, so the GRPO stage would start from an untrained model: set epochs >= 1, "
            "name a trained checkpoint to start from with resume_from=<.pth>, or set grpo_epochs=0."
        )


def validate(config):
    r"""Every check that needs no data, before anything is trained or logged: unknown keys, documented types and
    ranges, ``valid_metric``, and FLR's stages. Raises :class:`~recbole_flr.errors.UserInputError`."""
    check_unknown_keys(config)
    check_values(config)
    check_stages(config)


def training_plan(config):
    r"""One line saying how many epochs each stage runs at most, and what stops it early."""
    valid = f"valid {config['valid_metric']}"
    if "grpo_epochs" in config.final_config_dict and config["train_stages"] is not None:
        stages = read_train_stages(config["train_stages"])
        parts = []
        if "sft" in stages:
            parts.append(
                f"SFT up to {config['epochs']} epochs (epochs; stops after {config['stopping_step']} "
                f"epochs without a better {valid})"
            )
        if "grpo" in stages:
            parts.append(
                f"GRPO up to {config['grpo_epochs']} epochs (grpo_epochs; stops after "
                f"{config['grpo_stopping_step']} epochs without beating the best {valid})"
            )
        total = (config["epochs"] if "sft" in stages else 0) + (config["grpo_epochs"] if "grpo" in stages else 0)
        plan = ", then ".join(parts) + f": at most {total} epochs in all"
    else:
        plan = (
            f"up to {config['epochs']} epochs (epochs; stops after {config['stopping_step']} epochs without a "
            f"better {valid})"
        )
    resume = f"; resuming {config['resume_from']}" if config["resume_from"] else ""
    return f"Training plan: {plan}{resume}."
