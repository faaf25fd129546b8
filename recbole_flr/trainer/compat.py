"""
recbole_flr.trainer.compat
##########################
Checkpoints that torch >= 2.6 loads with ``weights_only=True``, for FLR and for every RecBole trainer.

RecBole 1.2.1 pickles its ``Config`` object into each checkpoint with ``pickle_protocol=4``; torch >= 2.6 loads with
``weights_only=True`` by default and rejects both, so RecBole's own ``evaluate(load_best_model=True)`` fails on the
checkpoint it has just written. Here a checkpoint holds only plain data (the config as a dict, tensors, numbers),
is written atomically, and has a name no other run shares.

Beside the best model ``<name>.pth``, a trainer with :class:`SafeCheckpointMixin` keeps ``<name>-last.pth``: the state
at the end of the last finished epoch (weights, optimizer, early-stopping counters, RNG states), from which
``resume_checkpoint`` continues an interrupted run on the same trajectory.
"""

import os
import pickle
import pickletools
import zipfile
import random
import uuid
from collections import OrderedDict

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from recbole.utils import get_local_time, set_color

from recbole_flr.config import Config
from recbole_flr.errors import CheckpointError, UserInputError


class NonFiniteLossError(UserInputError):
    r"""A NaN or infinite training loss; the message names the stage, epoch and batch (a ValueError, as RecBole's).
    Reported like a user error: the usual cause is a setting (learning rate, loss weights)."""


LAST_SUFFIX = "-last"


def last_checkpoint_file(saved_model_file):
    r"""The file of the resumable "last" checkpoint that goes with the best model ``saved_model_file``."""
    root, ext = os.path.splitext(saved_model_file)
    return f"{root}{LAST_SUFFIX}{ext or '.pth'}"


def best_checkpoint_file(last_file):
    r"""The best model that goes with the "last" checkpoint ``last_file`` (inverse of :func:`last_checkpoint_file`)."""
    root, ext = os.path.splitext(last_file)
    return root[: -len(LAST_SUFFIX)] + ext if root.endswith(LAST_SUFFIX) else None


def get_rng_state(generator=None):
    r"""Every random state that training reads, as data ``torch.load(weights_only=True)`` accepts.

    Args:
        generator (torch.Generator, optional): the train dataloader's own generator (RecBole's dataloaders shuffle
            with ``self.generator``, seeded once with ``seed``, not with the global RNG).
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if cuda else [],
        "numpy": [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
        "train_loader": generator.get_state() if isinstance(generator, torch.Generator) else None,
    }


def set_rng_state(state, generator=None):
    r"""Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if isinstance(generator, torch.Generator) and state["train_loader"] is not None:
        generator.set_state(state["train_loader"].cpu())


def plain_result(result):
    r"""A valid/test result (metric -> number) as plain floats; None stays None."""
    return None if result is None else {str(k): float(v) for k, v in result.items()}


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
        if not pickles_recbole_config(path):
            raise CheckpointError(
                f"Checkpoint {path} is not a recbole_flr or RecBole checkpoint: it does not load as plain data and it "
                f"was not written by RecBole. Not loaded (torch said: {str(error).splitlines()[0][:200]})."
            ) from None
        raise CheckpointError(
            f"Checkpoint {path} was written by RecBole's own trainer, which pickles its Config object, so it does not "
            "load as plain data (weights_only=True). load_checkpoint/load_data_and_model(..., weights_only=False) read "
            "it, but unpickling executes code stored in the file: do that only for a file you wrote or trust."
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, TypeError) as error:
        # what torch's unpickler raises on a file that is not a checkpoint (a text file: KeyError of a byte)
        raise CheckpointError(
            f"Checkpoint {path} is truncated or not a torch checkpoint ({type(error).__name__}: {error})."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        raise CheckpointError(f"Checkpoint {path} is not a RecBole/recbole_flr checkpoint (no state_dict/config).")
    return checkpoint


def pickles_recbole_config(path):
    r"""Whether ``path`` is a torch zip checkpoint whose pickle references RecBole's Config class (what RecBole 1.2.1's
    trainer writes), read with :mod:`pickletools`, which lists the opcodes without executing any."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return False
            data = archive.read(name)
        strings = {arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str)}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
    modules = ("recbole.config.configurator", "recbole.config", "recbole_flr.config")
    return "Config" in strings and any(module in strings for module in modules)


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
    r"""Mix into any :class:`recbole.trainer.Trainer`: plain-data, atomic, uniquely named checkpoints, a resumable
    "last" checkpoint, and an error naming the epoch and batch of a non-finite loss.

    - Best model: ``saved_model_file`` (written by RecBole's ``fit`` on each valid improvement).
    - Last checkpoint: ``last_model_file`` (``<best minus .pth>-last.pth``), rewritten after every epoch when
      ``saved``: the best model's keys plus ``best_valid_result``, ``fit_finished``, ``best_model_file`` and ``rng``
      (torch, CUDA, numpy, python and the train dataloader's generator). It is written when the next epoch's
      ``_train_epoch`` starts, the moment the previous epoch is complete (trained, validated, early-stopping counted,
      best model saved), and once more when ``fit`` returns (``fit_finished``). A run resumed from it
      (:meth:`resume_checkpoint`) starts that next epoch with the same weights, optimizer, counters and random
      states, so it follows the uninterrupted trajectory exactly (on the same machine and settings).
    - A NaN or infinite loss raises :class:`NonFiniteLossError` before the step: neither checkpoint is touched, so both
      hold the last good state.

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
        self.stage = getattr(self, "stage", None)  # FLRTrainer: "sft" or "grpo" while a stage trains
        self._in_fit = False  # inside fit: each epoch's start writes the last checkpoint of the one before
        self._save_last = False
        self._fit_epoch = None  # the epoch this fit trains (or last trained)
        self._train_data = None
        self._loss_position = [None, -1]  # (epoch, batch) of the loss _check_nan sees
        self._pending_rng = None  # a resumed run's random states, restored when its first epoch starts
        self._resume_finished = False  # the resumed run's fit had ended: the next fit trains nothing

    @property
    def last_model_file(self):
        r"""str: the resumable checkpoint written after every epoch, beside ``saved_model_file``."""
        return last_checkpoint_file(self.saved_model_file)

    def _checkpoint_state(self, epoch):
        config = Config.to_plain_dict(self.config)
        config.pop("resume_from", None)  # how this process started, not what the run is
        return {
            "config": config,
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

    # ------------------------------------------------------------------ last checkpoint and resume
    def _resume_state(self, finished):
        r"""What the last checkpoint holds beyond the best model's keys."""
        return {
            "last": True,
            "fit_finished": bool(finished),
            "best_valid_result": plain_result(self.best_valid_result),
            "best_model_file": os.path.basename(self.saved_model_file),
            "rng": get_rng_state(getattr(self._train_data, "generator", None)),
        }

    def _save_last_checkpoint(self, epoch, finished):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        state = self._checkpoint_state(epoch)
        state.update(self._resume_state(finished))
        atomic_torch_save(state, self.last_model_file)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self._resume_finished:
            # the interrupted run had finished this fit; RecBole's fit would save the current weights as the best
            self._resume_finished = False
            self._restore_pending_rng(train_data)
            return self.best_valid_score, self.best_valid_result
        self._in_fit, self._save_last, self._fit_epoch, self._train_data = True, saved, None, train_data
        try:
            result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        finally:
            self._in_fit = False
        if saved:
            epoch = self.start_epoch - 1 if self._fit_epoch is None else self._fit_epoch
            self._save_last_checkpoint(epoch, finished=True)
        return result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self._in_fit:
            if self._save_last and self._fit_epoch is not None:
                # the previous epoch is complete (trained, validated, early stopping counted, best model saved)
                self._save_last_checkpoint(self._fit_epoch, finished=False)
            self._fit_epoch = epoch_idx
        self._restore_pending_rng(train_data)
        self._loss_position = [epoch_idx, -1]
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    def _check_nan(self, loss):
        r"""RecBole calls this once per batch, before the backward pass: a NaN or inf loss stops training with an
        error naming the stage, epoch and batch, and no checkpoint is written after it."""
        self._loss_position[1] += 1
        if bool(torch.isfinite(loss).all()):
            return
        epoch, batch = self._loss_position
        kept = [f"best model {self.saved_model_file}"] if os.path.isfile(self.saved_model_file) else []
        if os.path.isfile(self.last_model_file):
            kept.append(f"last checkpoint {self.last_model_file} (resume with resume_from)")
        raise NonFiniteLossError(
            f"Training loss is {'nan' if bool(torch.isnan(loss).any()) else 'inf'} in stage "
            f"{self.stage or 'train'}, epoch {epoch}, batch {batch}; training stopped before this batch's update. "
            + (f"Kept, as of the last good epoch: {'; '.join(kept)}." if kept else "No checkpoint was written yet.")
        )

    def _restore_pending_rng(self, train_data):
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng, getattr(train_data, "generator", None))
            self._pending_rng = None

    def _read_resume_checkpoint(self, resume_file):
        r"""Load ``resume_file``, check it is this model's, restore the weights and the counters common to every
        trainer, and point ``saved_model_file`` at the original run's best model.

        Returns:
            dict: the checkpoint.
        """
        resume_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        saved = checkpoint["config"]
        for key in ("model", "dataset"):
            if str(saved.get(key, "")).lower() != str(self.config[key]).lower():
                raise CheckpointError(
                    f"Checkpoint {resume_file} belongs to {key} {saved.get(key)!r}, not {self.config[key]!r}."
                )
        if checkpoint.get("last"):
            self.saved_model_file = best_checkpoint_file(resume_file) or os.path.join(
                os.path.dirname(resume_file), checkpoint["best_model_file"]
            )
            self._pending_rng = checkpoint["rng"]
            self._resume_finished = checkpoint["fit_finished"]
            result = checkpoint["best_valid_result"]
            self.best_valid_result = None if result is None else OrderedDict(result)
            current = Config.to_plain_dict(self.config)
            changed = sorted(
                k for k in set(saved) | set(current)
                if k not in ("resume_from", "checkpoint_dir", "data_path") and saved.get(k) != current.get(k)
            )
            if changed:
                self.logger.warning(
                    f"Resuming {resume_file} with settings that differ from the interrupted run's: {changed}; the "
                    "run will not follow its original trajectory."
                )
        else:
            self.saved_model_file = resume_file
            self.logger.warning(
                f"{resume_file} is a best-model checkpoint, not a '{LAST_SUFFIX}.pth' one: training resumes after its "
                "epoch from its weights and optimizer, but without the random states and counters of the interrupted "
                "run, so not on the same trajectory."
            )
        load_model_state(self.model, checkpoint, resume_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        return checkpoint

    def resume_checkpoint(self, resume_file):
        r"""Continue a run from its last checkpoint (``<best>-last.pth``): weights, optimizer, epoch, early-stopping
        counter, best valid score and result, random states; the best model keeps the original run's file.

        A best-model checkpoint is accepted too (RecBole's behaviour: its weights, optimizer and epoch; the random
        states are not restored).
        """
        checkpoint = self._read_resume_checkpoint(resume_file)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(
            f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}"
            + (" (its training had finished)" if self._resume_finished else "")
        )

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            if not self.config["single_spec"]:
                torch.distributed.barrier()  # rank 0 writes the best model; the others must not read it earlier
            load_model_state(self.model, load_checkpoint(checkpoint_file, map_location=self.device), checkpoint_file)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
