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
from recbole_flr.errors import CheckpointError, UserFileNotFoundError, UserInputError
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
        except (ValueError, TypeError, KeyError, SyntaxError, NotImplementedError, RuntimeError) as error:
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
        settings = []
        for file in file_list or []:
            if os.path.isdir(file):
                raise UserInputError(f"Config file {file} (from --config_files/config_file_list) is a folder.")
            if not os.path.isfile(file):
                raise UserFileNotFoundError(
                    f"Config file {file} (from --config_files/config_file_list) does not exist."
                )
            with open(file, "r", encoding="utf-8") as f:
                try:
                    content = yaml.load(f.read(), Loader=self.yaml_loader)
                except yaml.YAMLError as error:
                    raise UserInputError(f"Config file {file} is not valid YAML: {error}") from None
            if content is None:
                continue  # empty, or comments only: no settings (RecBole's reader stopped on it with a TypeError)
            if not isinstance(content, dict):
                raise UserInputError(f"Config file {file} must hold 'key: value' lines, but it holds {content!r}.")
            for key in content:
                self.key_sources[key] = f"the config file {file}"
            settings.append(file)
        return super()._load_config_files(settings)

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

    def _set_default_parameters(self):
        check_evaluation(self)  # RecBole's own checks of these end in NotImplementedError/RuntimeError tracebacks
        super()._set_default_parameters()

    def _init_device(self):
        config = self.final_config_dict
        if config.get("use_gpu") is False:
            config["gpu_id"] = ""  # RecBole 1.2.1 picks the device from gpu_id alone: use_gpu: False still ran on a GPU
        self._init_device_from_gpu_id()
        self.cpu_instead_of_gpu = None  # why a run asked for a GPU gets the CPU: validate() refuses it
        if config["device"].type != "cuda":
            if self.external_config_dict.get("use_gpu") is True:
                self.cpu_instead_of_gpu = (
                    "gpu_id is empty" if torch.cuda.is_available() else "torch sees no GPU on this machine"
                )
            config["use_gpu"] = False  # the log and RecBole's trainer say what runs (the default is True)

    def _init_device_from_gpu_id(self):
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
# The sizes are those of RecBole's models and FLR's embedded backbone (a 0 fails deep inside torch, or, for n_layers,
# built no layer at all).
RECBOLE_RANGES = {
    "epochs": "[0, inf)",
    "train_batch_size": "[1, inf)",
    "eval_batch_size": "[1, inf)",
    "learning_rate": "[0, inf)",  # 0: the weights stay as they are (a test of the untrained model, of DDP)
    "weight_decay": "[0, inf)",
    "stopping_step": "[0, inf)",
    "MAX_ITEM_LIST_LENGTH": "[1, inf)",
    "worker": "[0, inf)",
    "hidden_size": "[1, inf)",
    "embedding_size": "[1, inf)",
    "inner_size": "[1, inf)",
    "n_layers": "[1, inf)",
    "num_layers": "[1, inf)",
    "n_heads": "[1, inf)",
    "initializer_range": "(0, inf)",
}
#: the keys of :data:`RECBOLE_RANGES` that are numbers, not integers
RECBOLE_FLOATS = {"learning_rate", "weight_decay", "initializer_range"}
#: a dropout probability (hidden_dropout_prob, attn_dropout_prob, dropout_prob, lora_dropout, ...), in [0, 1]
DROPOUT_KEY = re.compile(r"^(\w+_)?dropout(_prob|_rate)?$")
#: settings that were removed, and why: ``{(key, value): reason}``, value None for every value of the key. A removed
#: key's value that still holds (``KEPT``: what every run now does) is accepted, so old YAML files and checkpoints load.
REMOVED = {
    ("grpo_surrogate", "target_logprob"): "with group-centred advantages its gradient pointed against the reward's "
    "(cosine -0.24 to -0.31, issue 14), so it trained the latent away from the reward",
    ("grpo_surrogate", None): "the GRPO policy is the Gaussian thought policy (gaussian); the gate policy (gate) was "
    "level with a random-reward control on test (issue 14, docs/research_log.md)",
    ("grpo_trainable", "gate"): "it trained the gate scorer for the gate policy, which was removed (level with a "
    "random-reward control on test, issue 14, docs/research_log.md)",
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
            legal = None
            if found >= 0:  # SHAN.yaml quotes its range in reStructuredText: Range in ``['BPR', 'CE']``.
                try:
                    legal = _parse_range(_bracket(comment[found + len("Range in ") :].strip().strip("`")))
                except yaml.YAMLError:
                    legal = None  # a range in words: the key's own reader checks it
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
            known |= _yaml_keys(path)
    for root in (os.path.dirname(os.path.realpath(recbole.__file__)), os.path.dirname(os.path.realpath(__file__))):
        for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True):
            known |= _code_keys(path)
    return frozenset(known)


def _yaml_keys(path):
    with open(path, encoding="utf-8") as f:
        return set(re.findall(r"^([A-Za-z_]\w*)\s*:", f.read(), flags=re.MULTILINE))


def _code_keys(path):
    with open(path, encoding="utf-8") as f:
        return set(KEY_READ.findall(f.read()))


def _where(config, key):
    return config.key_sources.get(
        key, f"{config.model}'s default" if getattr(config, "model", None) else "the settings"
    )


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
    if kind == "float" and isinstance(value, int):
        config[key] = float(value)  # `initializer_range: 1` is a float to YAML's reader, not to transformers'
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
        legal = RECBOLE_RANGES.get(key) or ("[0, 1]" if DROPOUT_KEY.match(key) else None)
        if legal:
            kind = "float" if key in RECBOLE_FLOATS or key not in RECBOLE_RANGES else "int"
            _check_value(
                config,
                key,
                kind,
                _parse_range(legal),
                f"({kind}) Range in {legal}.",
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
    metric_types, names = _metric_types()
    if not cutoff and metric_types.get(name.lower()) is not None and metric_types[name.lower()].name == "RANKING":
        raise UserInputError(
            f"valid_metric={valid_metric!r} is a ranking metric and needs a cut-off from topk {topk}: e.g. "
            f"valid_metric: {names[name.lower()]}@{topk[0] if topk else 10}."
        )
    if cutoff and (not cutoff.isdigit() or int(cutoff) not in topk):
        raise UserInputError(
            f"valid_metric={valid_metric!r} needs the cut-off {cutoff} in topk, but topk is {topk}: add it to topk "
            f"or choose valid_metric at one of {topk}."
        )


def _metric_types():
    from recbole.evaluator.register import metric_types, metrics_dict

    return metric_types, {name: metric.__name__ for name, metric in metrics_dict.items()}


#: eval_args: its keys, the split methods and their values, the orders (RecBole's Dataset.build)
EVAL_ARGS_KEYS = ("split", "order", "group_by", "mode")
LEAVE_ONE_MODES = ("valid_and_test", "valid_only", "test_only")
EVAL_ORDERS = ("RO", "TO")
EVAL_MODE = re.compile(r"^(full|labeled|(uni|pop)[1-9]\d*)$")


def check_evaluation(config):
    r"""``metrics`` and ``eval_args``, before RecBole's Config reads them (it fails on an unknown metric, a value metric
    with full ranking or an unknown mode with NotImplementedError/RuntimeError, and on an unknown split method only
    once the dataset is read).

    Args:
        config (Config): the config being built (its ``final_config_dict`` and ``key_sources``).
    """
    metric_types, names = _metric_types()
    ranking = [names[name] for name, kind in metric_types.items() if kind.name == "RANKING"]
    value = [names[name] for name, kind in metric_types.items() if kind.name == "VALUE"]
    metrics = config.final_config_dict.get("metrics")
    metrics = [metrics] if isinstance(metrics, str) else metrics
    if not isinstance(metrics, (list, tuple)) or not metrics:
        raise UserInputError(
            f"metrics={metrics!r} (in {_where(config, 'metrics')}) must be a metric name or a list of them: "
            f"ranking metrics {ranking}, or value metrics {value}."
        )
    for metric in metrics:
        if str(metric).lower() not in metric_types:
            close = difflib.get_close_matches(str(metric).lower(), list(names), n=1, cutoff=0.6)
            hint = f" Did you mean '{names[close[0]]}'?" if close else ""
            raise UserInputError(
                f"metrics: unknown metric {metric!r} (in {_where(config, 'metrics')}).{hint} RecBole's ranking "
                f"metrics are {ranking}; its value metrics {value}."
            )
    kinds = {metric_types[str(metric).lower()].name for metric in metrics}
    if len(kinds) > 1:
        raise UserInputError(
            f"metrics={list(metrics)} mixes ranking metrics with value metrics ({value}), which RecBole evaluates in "
            "different ways: use one kind."
        )
    eval_args = check_eval_args(config)
    modes = eval_args.get("mode", "full")
    modes = set(modes.values()) if isinstance(modes, dict) else {modes}
    if kinds == {"VALUE"} and "full" in modes:
        raise UserInputError(
            f"metrics={list(metrics)} are value metrics: they score given candidates (sampled or labeled), which full "
            f"ranking has not. Set eval_args' mode to uni100, pop100 or labeled, or use ranking metrics "
            f"({', '.join(ranking[:6])}, ...) with full ranking."
        )


def check_eval_args(config):
    r"""``eval_args``: its keys, one split method (``RS``/``TS`` ratios, ``LS`` mode), the order and each mode.

    Returns:
        dict: eval_args as given.
    """
    eval_args, where = config.final_config_dict.get("eval_args"), _where(config, "eval_args")
    legal_split = "{'RS': [0.8, 0.1, 0.1]}, {'TS': [0.8, 0.1, 0.1]} or {'LS': 'valid_and_test'}"
    if not isinstance(eval_args, dict):
        raise UserInputError(
            f"eval_args={eval_args!r} (in {where}) must be a dict of {list(EVAL_ARGS_KEYS)}, e.g. "
            "{'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'mode': 'full'}."
        )
    for key in eval_args:
        if key not in EVAL_ARGS_KEYS:
            close = difflib.get_close_matches(str(key), EVAL_ARGS_KEYS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserInputError(
                f"eval_args: unknown key {key!r} (in {where}).{hint} Its keys: {list(EVAL_ARGS_KEYS)}."
            )
    split = eval_args.get("split", {"RS": [0.8, 0.1, 0.1]})
    if not isinstance(split, dict) or len(split) != 1:
        raise UserInputError(f"eval_args' split={split!r} (in {where}) must name one split method: {legal_split}.")
    ((method, value),) = split.items()
    if method in ("RS", "TS"):
        ratios = value if isinstance(value, (list, tuple)) else None
        if (
            not ratios
            or len(ratios) != 3
            or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0 for r in ratios)
            or sum(ratios) <= 0
        ):
            raise UserInputError(
                f"eval_args' split {{'{method}': {value!r}}} (in {where}): {method} takes a list of 3 "
                "ratios >= 0 (train, valid, test), e.g. [0.8, 0.1, 0.1]."
            )
    elif method == "LS":
        if value not in LEAVE_ONE_MODES:
            raise UserInputError(
                f"eval_args' split {{'LS': {value!r}}} (in {where}): the leave-one-out mode is one of "
                f"{list(LEAVE_ONE_MODES)}."
            )
    else:
        raise UserInputError(
            f"eval_args' split method {method!r} (in {where}) is unknown: RS (ratios), TS (ratios in time) or LS "
            f"(leave one out): {legal_split}."
        )
    order = eval_args.get("order", "RO")
    if order not in EVAL_ORDERS:
        raise UserInputError(
            f"eval_args' order={order!r} (in {where}) is not one of {list(EVAL_ORDERS)} (RO: random, TO: by time)."
        )
    group_by = eval_args.get("group_by", "user")
    if group_by not in ("user", None, "none"):
        raise UserInputError(f"eval_args' group_by={group_by!r} (in {where}) is not one of ['user', ~].")
    mode = eval_args.get("mode", "full")
    modes = mode if isinstance(mode, dict) else {"valid": mode}
    for phase, value in modes.items():
        if phase not in ("valid", "test") or not (isinstance(value, str) and EVAL_MODE.match(value)):
            raise UserInputError(
                f"eval_args' mode={mode!r} (in {where}) must be full, labeled, uni<N> or pop<N> (N candidates "
                "sampled per positive, e.g. uni100), or a dict {'valid': ..., 'test': ...} of them."
            )
    return eval_args


@lru_cache(maxsize=1)
def model_yaml_keys():
    r"""``{model name: the keys of its properties YAML}``, for every model YAML of RecBole and of the plugin."""
    owned = {}
    for folder in (os.path.join(RECBOLE_PROPERTIES_DIR, "model"), os.path.join(PROPERTIES_DIR, "model")):
        for path in glob.glob(os.path.join(folder, "*.yaml")):
            owned.setdefault(os.path.basename(path)[: -len(".yaml")], set()).update(_yaml_keys(path))
    return {name: frozenset(keys) for name, keys in owned.items()}


@lru_cache(maxsize=1)
def shared_keys():
    r"""The keys that every model may be given: RecBole's ``overall.yaml`` and dataset YAMLs, the plugin's dataset
    YAMLs, the run script's keys, and every key that RecBole's code outside its model zoo reads (data, trainers,
    evaluation, the model base classes and layers)."""
    keys = set(RUN_KEYS) | {key for key, _ in REMOVED}
    paths = [os.path.join(RECBOLE_PROPERTIES_DIR, "overall.yaml")]
    paths += glob.glob(os.path.join(RECBOLE_PROPERTIES_DIR, "dataset", "*.yaml"))
    paths += glob.glob(os.path.join(PROPERTIES_DIR, "dataset", "*.yaml"))
    for path in paths:
        if not path.endswith("url.yaml"):
            keys |= _yaml_keys(path)
    recbole_root = os.path.dirname(os.path.realpath(recbole.__file__))
    zoo = os.path.join(recbole_root, "model", "")
    for path in glob.glob(os.path.join(recbole_root, "**", "*.py"), recursive=True):
        if not (path.startswith(zoo) and os.path.dirname(path) != zoo.rstrip(os.sep)):
            keys |= _code_keys(path)
    return frozenset(keys)


@lru_cache(maxsize=None)
def model_keys(model):
    r"""Every key that ``model`` (a name or class) reads: :func:`shared_keys`, the properties YAML of the model and of
    each class it is built on (RecBole's and the plugin's), and the keys read in those classes' source files."""
    import inspect

    model_class = get_model(model) if isinstance(model, str) else model
    keys = set(shared_keys())
    owned = model_yaml_keys()
    for base in model_class.__mro__:
        keys |= owned.get(base.__name__, set())
        if base.__module__.startswith(("recbole.model.", "recbole_flr.model.")):
            keys |= _code_keys(inspect.getsourcefile(base))
    return frozenset(keys)


def foreign_keys(model, keys):
    r"""The keys among ``keys`` that belong to other models and that ``model`` does not read.

    Args:
        model (str or type): the model being run (``SASRec``, ``FLR``, ...) or its class.
        keys (iterable): setting names (the user's keys, or the keys a hyper-parameter file tunes).

    Returns:
        dict: ``{key: sorted names of the models whose properties YAML holds it}``, in the order of ``keys``.
    """
    own, owned = model_keys(model), model_yaml_keys()
    foreign = {}
    for key in keys:
        if key not in own:
            # the plugin's models first: a key of FLR's given to SASRec suggests --model=FLR
            plugin = set(glob.glob(os.path.join(PROPERTIES_DIR, "model", "*.yaml")))
            plugin = {os.path.basename(path)[: -len(".yaml")] for path in plugin}
            owners = sorted(
                (name for name, model_keys_ in owned.items() if key in model_keys_),
                key=lambda name: (name not in plugin, name),
            )
            if owners:
                foreign[key] = owners
    return foreign


def check_foreign_keys(model, keys, where=None):
    r"""Refuse a key of another model's (``--model=SASRec --n_factors=3``), which ``model`` would silently ignore.

    Args:
        model (str or type): the model being run, or its class.
        keys (iterable): setting names.
        where (callable, optional): ``where(key)``: where the user set it (a file, the command line), for the message.

    Raises:
        UserInputError: naming the first such key, the models it belongs to and the model being run.
    """
    name = model if isinstance(model, str) else model.__name__
    for key, owners in foreign_keys(model, keys).items():
        shown = ", ".join(owners[:5]) + (f" and {len(owners) - 5} more" if len(owners) > 5 else "")
        place = f" (in {where(key)})" if where else ""
        raise UserInputError(
            f"'{key}'{place} is a setting of {shown}, not of {name}, which would ignore it: remove it, or run the "
            f"model it belongs to (--model={owners[0]})."
        )


def check_architecture(config):
    r"""``hidden_size`` must be a multiple of ``n_heads`` for a model with attention heads (FLR's embedded backbone,
    RecBole's transformers), which otherwise fail once the dataset is read."""
    keys = model_keys(config.model_class)
    if "n_heads" not in keys or "hidden_size" not in keys or (config["llm_path"] and config.model == "FLR"):
        return
    hidden_size, n_heads = config["hidden_size"], config["n_heads"]
    if isinstance(hidden_size, int) and isinstance(n_heads, int) and n_heads > 0 and hidden_size % n_heads:
        raise UserInputError(
            f"hidden_size={hidden_size} (in {_where(config, 'hidden_size')}) must be a multiple of n_heads={n_heads} "
            f"(in {_where(config, 'n_heads')}): each of the {n_heads} heads attends over hidden_size / n_heads "
            f"dimensions, e.g. hidden_size={hidden_size - hidden_size % n_heads or n_heads}."
        )


def check_resume_from(config):
    r"""``resume_from`` must be a checkpoint of this model and dataset (the trainer reads it only after the dataset)."""
    path = config["resume_from"]
    if not path:
        return
    if not isinstance(path, str):
        raise UserInputError(f"resume_from={path!r} (in {_where(config, 'resume_from')}) must be a checkpoint's path.")
    from recbole_flr.checkpoint import load_checkpoint  # CheckpointError: missing, not a checkpoint

    saved = load_checkpoint(path)["config"]
    saved = saved if isinstance(saved, dict) else plain_config(saved)
    for key in ("model", "dataset"):
        if str(saved.get(key, "")).lower() != str(config[key]).lower():
            raise CheckpointError(
                f"Checkpoint {path} (resume_from) belongs to {key} {saved.get(key)!r}, not {config[key]!r}."
            )


#: RecBole's sequential models that read a knowledge graph (RecBole's KGSeqDataset): .kg, .link and pretrained
#: entity vectors (.ent, RecBole's additional_feat_suffix for them)
KG_SEQUENTIAL_MODELS = ("GRU4RecKG", "KSR")


def check_model_needs(config):
    r"""What a model needs beyond the interactions, where it is cheap to see before the dataset is read: a knowledge
    graph (GRU4RecKG, KSR), the item features it reads loaded through ``load_col`` (SASRecF, FDSA, GRU4RecF:
    ``selected_features``; S3Rec: ``item_attribute``), and FEARec's two layers."""
    model, dataset, folder = config.model, config.dataset, config["data_path"]
    if model in KG_SEQUENTIAL_MODELS and isinstance(folder, str) and os.path.isdir(folder):
        suffixes = ["kg", "link"] + list(config["additional_feat_suffix"] or [])
        missing = [
            f"{dataset}.{suffix}"
            for suffix in suffixes
            if not os.path.isfile(os.path.join(folder, f"{dataset}.{suffix}"))
        ]
        if missing:
            raise UserInputError(
                f"{model} needs a knowledge graph and pretrained entity vectors, and dataset '{dataset}' has not "
                f"{', '.join(missing)} in {folder}: RecBole reads {dataset}.kg (head, relation, tail triples), "
                f"{dataset}.link (item id to entity id) and {dataset}.ent (ent_id, ent_emb: one vector per entity) "
                "(https://recbole.io/atomic_files.html)."
            )
    load_col = config["load_col"]
    loaded = load_col.get("item") if isinstance(load_col, dict) else None
    for key in ("selected_features", "item_attribute"):
        if key not in model_keys(config.model_class) or loaded is None:
            continue
        wanted = config[key]
        wanted = [wanted] if isinstance(wanted, str) else list(wanted or [])
        absent = [field for field in wanted if field not in loaded]
        if absent:
            where = f"in {_where(config, key)}" if key in config.key_sources else f"{model}'s default"
            example = [field for field in loaded if field != config["ITEM_ID_FIELD"]][:1] or ["title"]
            example = example if isinstance(config[key], list) else repr(example[0])
            raise UserInputError(
                f"{model} reads the item field(s) {absent} ({key}, {where}), which load_col does not load from "
                f"{dataset}.item (it loads {loaded}): set {key} to item fields of the dataset (e.g. {key}: {example}) "
                "and load them in load_col."
            )
    if model == "S3Rec" and (config["train_stage"] != "finetune" or not os.path.isfile(str(config["pre_model_path"]))):
        raise UserInputError(
            f"S3Rec (train_stage={config['train_stage']!r}, pre_model_path={config['pre_model_path']!r}) cannot run "
            "through recbole_flr: its pretrain stage (RecBole's default) trains pretrain_epochs (500) of "
            "self-supervised objectives, tests nothing and saves RecBole's pickled checkpoints; its finetune stage "
            "needs pre_model_path, one of those files, which it reads with torch.load, and torch >= 2.6 refuses a "
            "pickled RecBole Config (weights_only). Run S3Rec with RecBole itself on torch < 2.6."
        )
    if model in CPR_MODELS:
        sizes = _reranker_sizes(config)
        facets = [config[key] for key in ("n_facet", "n_facet_context", "n_facet_reranker", "n_facet_emb")]
        if all(isinstance(n, int) for n in facets + [config["n_facet_all"]]):
            total = facets[0] + facets[1] + facets[2] * len(sizes) + facets[3]
            if total != config["n_facet_all"]:
                raise UserInputError(
                    f"{model}: n_facet_all={config['n_facet_all']} must be n_facet + n_facet_context + "
                    f"n_facet_reranker * (the number of reranker_CAN_NUM sizes) + n_facet_emb = {total}."
                )
    if model == "FEARec" and isinstance(config["n_layers"], int) and config["n_layers"] < 2:
        raise UserInputError(
            f"FEARec needs n_layers >= 2 (n_layers={config['n_layers']}, in {_where(config, 'n_layers')}): RecBole's "
            "FEARec spreads its frequency filters over n_layers - 1 steps and divides by zero with one layer."
        )


#: RecBole's softmax-CPR models, which rerank reranker_CAN_NUM candidates among the items
CPR_MODELS = ("GRU4RecCPR", "SASRecCPR")


def _reranker_sizes(config):
    value = config["reranker_CAN_NUM"]
    if isinstance(value, (tuple, list)):  # --reranker_CAN_NUM=500,100,20 reads as a tuple, which RecBole's model cannot
        config["reranker_CAN_NUM"] = ",".join(map(str, value))
    try:
        sizes = [int(size) for size in str(config["reranker_CAN_NUM"]).split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or sizes != sorted(sizes, reverse=True):
        raise UserInputError(
            f"reranker_CAN_NUM={value!r} (in {_where(config, 'reranker_CAN_NUM')}) must be candidate counts >= 1 in "
            "descending order, e.g. 100 or '500,100,20'."
        )
    return sizes


def check_model_fits_data(config, dataset):
    r"""What a model needs of the data that only the loaded dataset tells, checked before the model is built: the
    softmax-CPR models rerank ``reranker_CAN_NUM`` candidates, which must not outnumber the items (a torch.topk
    "selected index k out of range" in the first batch otherwise).

    Args:
        config (Config): the run's config.
        dataset (Dataset): the loaded dataset.
    """
    if config.model in CPR_MODELS:
        largest = max(_reranker_sizes(config))
        if largest > dataset.item_num:
            raise UserInputError(
                f"{config.model} reranks reranker_CAN_NUM={config['reranker_CAN_NUM']!r} candidates (in "
                f"{_where(config, 'reranker_CAN_NUM')}), but dataset '{config.dataset}' has {dataset.item_num} items "
                f"(with the padding item): set reranker_CAN_NUM to at most {dataset.item_num}."
            )


def check_run_settings(config):
    r"""The dataset's name, ``gpu_id`` (RecBole passes any string on to CUDA_VISIBLE_DEVICES, so ``gpu_id: abc``
    silently ran on the CPU) and ``checkpoint_dir`` (a file there ended in FileExistsError)."""
    if not str(config.dataset or "").strip():
        raise UserInputError("--dataset is empty: name a dataset (ml-100k, or a folder of atomic files in data_path).")
    gpu_id = config["gpu_id"]
    if not re.fullmatch(r"(\d+(,\d+)*)?", str(gpu_id).replace(" ", "")):
        raise UserInputError(
            f"gpu_id={gpu_id!r} (in {_where(config, 'gpu_id')}) must be GPU numbers as CUDA_VISIBLE_DEVICES takes them "
            "('0', '0,1'), or empty for the CPU."
        )
    folder = config["checkpoint_dir"]
    if isinstance(folder, str) and os.path.exists(folder) and not os.path.isdir(folder):
        raise UserInputError(
            f"checkpoint_dir={folder!r} (in {_where(config, 'checkpoint_dir')}) is a file: it must be a folder (the "
            "run writes its checkpoints there)."
        )


def check_device(config):
    r"""``use_gpu: True`` on a run that would use the CPU (no GPU, or ``gpu_id`` empty): RecBole runs on the CPU."""
    why = getattr(config, "cpu_instead_of_gpu", None)
    if why:
        raise UserInputError(
            f"use_gpu=True (in {_where(config, 'use_gpu')}) but the run would use the CPU: {why}. Leave use_gpu out or "
            "set use_gpu: False to run on the CPU, or set gpu_id to a GPU's."
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
    r"""Every check that needs no data, before anything is trained or logged: unknown keys, another model's keys,
    documented types and ranges, ``valid_metric``, ``hidden_size`` against ``n_heads``, what a model needs (a
    knowledge graph, item features, ...), ``use_gpu``, FLR's stages and ``resume_from``. (``metrics`` and ``eval_args``
    are checked while the Config is built.) Raises :class:`~recbole_flr.errors.UserInputError` (or
    :class:`~recbole_flr.errors.CheckpointError` for ``resume_from``)."""
    check_unknown_keys(config)
    check_foreign_keys(config.model_class, config.external_config_dict, lambda key: _where(config, key))
    check_values(config)
    check_architecture(config)
    check_model_needs(config)
    check_run_settings(config)
    check_device(config)
    check_stages(config)
    check_resume_from(config)


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
