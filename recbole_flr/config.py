"""
recbole_flr.config
##################
RecBole's :class:`~recbole.config.Config` with the plugin's models and default properties.
"""

import os

import recbole
import torch
import yaml
from recbole.config import Config as RecBoleConfig

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

    def compatibility_settings(self):
        numpy_compat()

    def _load_config_files(self, file_list):
        for file in file_list or []:
            if not os.path.isfile(file):
                raise FileNotFoundError(f"Config file {file} (from --config_files/config_file_list) does not exist.")
            with open(file, "r", encoding="utf-8") as f:
                try:
                    content = yaml.load(f.read(), Loader=self.yaml_loader)
                except yaml.YAMLError as error:
                    raise ValueError(f"Config file {file} is not valid YAML: {error}") from None
            if not isinstance(content, dict):
                raise ValueError(f"Config file {file} must hold 'key: value' lines, but it holds {content!r}.")
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
        r"""What rebuilds this config: the user's external settings plus model and dataset, as plain data.

        A checkpoint stores this instead of the pickled Config, so it loads with ``torch.load(weights_only=True)``;
        ``Config(config_dict=plain)`` then recomputes every derived key (device, data_path, eval settings).

        Returns:
            dict: plain YAML-like data (str, int, float, bool, None, list, dict).
        """
        plain = _to_plain(self.external_config_dict)
        plain["model"], plain["dataset"] = self.model, self.dataset
        # absolute, so that a checkpoint reloads from any working directory
        plain["data_path"] = os.path.dirname(os.path.abspath(self.final_config_dict["data_path"]))
        for key in ("local_rank", "world_size", "nproc", "offset", "ip", "port"):  # a reload is one process
            plain.pop(key, None)
        return plain


def _to_plain(value):
    if isinstance(value, dict):
        return {str(key): _to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
