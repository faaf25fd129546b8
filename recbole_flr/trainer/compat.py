"""
recbole_flr.trainer.compat
##########################
Checkpoints that torch >= 2.6 loads with ``weights_only=True``, for FLR and for every RecBole trainer.

RecBole 1.2.1 pickles its ``Config`` object into each checkpoint with ``pickle_protocol=4``; torch >= 2.6 loads with
``weights_only=True`` by default and rejects both, so RecBole's own ``evaluate(load_best_model=True)`` fails on the
checkpoint it has just written. Here a checkpoint holds only plain data (the config as a dict, tensors, numbers),
is written atomically, and has a name no other run shares.
"""

import os
import pickle
import uuid

import torch
from torch.nn.parallel import DistributedDataParallel
from recbole.utils import get_local_time, set_color

from recbole_flr.config import Config


class CheckpointError(RuntimeError):
    r"""A checkpoint file that cannot be read, or that belongs to another model."""


def atomic_torch_save(state, path):
    r"""``torch.save`` to a temporary file beside ``path``, then rename: a kill never leaves half a checkpoint."""
    tmp_path = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save(state, tmp_path)
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def load_checkpoint(path, map_location="cpu", weights_only=True):
    r"""Read a checkpoint with an explicit ``weights_only`` choice and a clear error for files it cannot read.

    Args:
        path (str): checkpoint file.
        map_location: as in ``torch.load``.
        weights_only (bool): ``True`` (default) for recbole_flr checkpoints, which hold plain data only. A checkpoint
            written by RecBole's own trainer pickles its Config and needs ``False``: use that only for files you trust,
            since unpickling can run arbitrary code.

    Returns:
        dict: the checkpoint.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file {path} does not exist.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"Checkpoint {path} holds more than plain data (it was probably written by RecBole's own trainer, which "
            "pickles its Config), so it cannot be loaded with weights_only=True. If you trust the file, load it with "
            f"weights_only=False. Loader said: {str(error).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"Checkpoint {path} is truncated or not a torch checkpoint: {error}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        raise CheckpointError(f"Checkpoint {path} is not a RecBole/recbole_flr checkpoint (no state_dict/config).")
    return checkpoint


def checkpoint_state_dict(model):
    r"""What a checkpoint stores of ``model``: ``model.checkpoint_state_dict()`` when the model defines it (FLR leaves
    out a frozen pretrained LLM), else the whole ``state_dict``."""
    if hasattr(model, "checkpoint_state_dict"):
        return model.checkpoint_state_dict()
    return model.state_dict()


def load_model_state(model, checkpoint, path=""):
    r"""Load a checkpoint's weights into ``model``; only keys the model leaves out of its checkpoints may be missing."""
    state_dict = checkpoint["state_dict"]
    if hasattr(model, "checkpoint_state_dict"):
        expected = set(model.checkpoint_state_dict().keys())
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - set(model.state_dict()))
        if missing or unexpected:
            raise CheckpointError(
                f"Checkpoint {path} does not match {type(model).__name__}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]} (was it written for another model or configuration?)"
            )
        model.load_state_dict(state_dict, strict=False)
    else:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as error:
            raise CheckpointError(
                f"Checkpoint {path} does not match {type(model).__name__} (model "
                f"{checkpoint['config'].get('model')!r} in the file): {str(error).splitlines()[0]}"
            ) from None
    model.load_other_parameter(checkpoint.get("other_parameter"))


class SafeCheckpointMixin:
    r"""Mix into any :class:`recbole.trainer.Trainer`: plain-data, atomic, uniquely named checkpoints.

    NOTE:
        RecBole names the best model ``<model>-<time to the second>.pth``, so two runs started in the same second
        share (and overwrite) one file. Here the name also carries the dataset and a random suffix.
    """

    def __init__(self, config, model):
        if not config["single_spec"] and config["device"].type == "cpu":
            # RecBole wraps the model in DistributedDataParallel(device_ids=[rank]), which only GPU modules accept
            config["single_spec"] = True
            super().__init__(config, model)
            config["single_spec"] = False
            self.distributed_model = DistributedDataParallel(self.model)
        else:
            super().__init__(config, model)
        name = f"{config['model']}-{config['dataset']}-{get_local_time()}-{uuid.uuid4().hex[:6]}.pth"
        if not config["single_spec"]:
            names = [name]
            torch.distributed.broadcast_object_list(names, src=0)  # every rank reads the file rank 0 writes
            name = names[0]
        self.saved_model_file = os.path.join(self.checkpoint_dir, name)

    def _checkpoint_state(self, epoch):
        return {
            "config": Config.to_plain_dict(self.config),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": checkpoint_state_dict(self.model),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        atomic_torch_save(self._checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        if checkpoint["config"].get("model", "").lower() != self.config["model"].lower():
            raise CheckpointError(
                f"Checkpoint {resume_file} belongs to model {checkpoint['config'].get('model')!r}, "
                f"not {self.config['model']!r}."
            )
        self.saved_model_file = resume_file
        load_model_state(self.model, checkpoint, resume_file)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            if not self.config["single_spec"]:
                torch.distributed.barrier()  # rank 0 writes the best model; the others must not read it earlier
            load_model_state(self.model, load_checkpoint(checkpoint_file, map_location=self.device), checkpoint_file)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
