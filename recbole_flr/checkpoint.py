"""
recbole_flr.checkpoint
######################
The bottom floor of the package: checkpoint files, for FLR and for every RecBole trainer. It imports nothing of
recbole_flr but :mod:`recbole_flr.errors`.

RecBole 1.2.1 pickles its ``Config`` object into each checkpoint with ``pickle_protocol=4``; torch >= 2.6 loads with
``weights_only=True`` by default and rejects both, so RecBole's own ``evaluate(load_best_model=True)`` fails on the
checkpoint it has just written. Here a checkpoint holds only plain data (the config as a dict, tensors, numbers, the
random states), is written atomically, and is read with an explicit ``weights_only`` choice.

The trainers' side (what a checkpoint holds, when it is written, how a run resumes from it) is
:class:`recbole_flr.trainer.safe_checkpoint.SafeCheckpointMixin`.
"""

import os
import pickle
import pickletools
import random
import shutil
import zipfile

import numpy as np
import torch

from recbole_flr.errors import CheckpointError

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


def atomic_write(path, write):
    r"""``write(tmp_path)`` to a temporary file beside ``path``, then rename: a kill never leaves half a file.

    Raises:
        CheckpointError: the file cannot be written (a full disk, a read-only or vanished folder), naming ``path``, the
            reason and the space left; the file that was there before is intact.
    """
    tmp_path = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as error:  # torch.save's zip writer reports a failed write as a RuntimeError
        reason = f"{error.strerror} (errno {error.errno})" if getattr(error, "strerror", None) else str(error)
        try:
            free = f"{shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2**20:.0f} MiB free there"
        except OSError:
            free = "the folder is not readable"
        before = "the file written before is intact" if os.path.isfile(path) else "no earlier version exists"
        raise CheckpointError(
            f"Cannot write {path}: {reason.splitlines()[0][:300]} ({free}; {before}). Free space or choose another "
            "checkpoint_dir, then resume from the run's -last.pth file if it has one."
        ) from None
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def atomic_torch_save(state, path):
    r"""``torch.save`` through :func:`atomic_write`: a kill never leaves half a checkpoint."""
    atomic_write(path, lambda tmp_path: torch.save(state, tmp_path))


def copy_file(source, path):
    r"""Copy ``source`` to ``path`` through :func:`atomic_write` (``source`` is only read)."""
    atomic_write(path, lambda tmp_path: shutil.copyfile(source, tmp_path))


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


def other_parameter_state(model):
    r"""RecBole's ``model.other_parameter()`` as a checkpoint stores it: without the submodules it lists, whose weights
    the ``state_dict`` already holds. SASRecF, GRU4RecF and FDSA list their ``feature_embed_layer``; pickled as a
    module, it made the checkpoint unreadable as plain data (``weights_only=True``) at the test after training.

    Raises:
        CheckpointError: a value that is neither a submodule nor plain data (tensors, arrays, numbers, strings), named.
    """
    submodules = {id(module) for module in model.modules()}
    kept = {}
    for key, value in model.other_parameter().items():
        if isinstance(value, torch.nn.Module) and id(value) in submodules:
            continue  # in the state_dict; loading keeps the model's own module and fills it from there
        if not (value is None or isinstance(value, (torch.Tensor, bool, int, float, str, list, dict))):
            raise CheckpointError(
                f"{type(model).__name__}.other_parameter()[{key!r}] is a {type(value).__name__}, which a plain-data "
                "checkpoint cannot hold: this model's checkpoints are not supported by recbole_flr."
            )
        kept[key] = value
    return kept


def load_model_state(model, checkpoint, path=""):
    r"""Load a checkpoint's weights into ``model``; only keys the model leaves out of its checkpoints may be missing."""
    state_dict = checkpoint["state_dict"]
    own = model.state_dict()
    resized = [
        f"{key} {list(value.shape)} in the file, {list(own[key].shape)} here"
        for key, value in state_dict.items()
        if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape
    ]
    if resized:
        raise CheckpointError(
            f"Checkpoint {path} does not fit {type(model).__name__} as configured now: {'; '.join(resized[:3])}"
            + (f" (and {len(resized) - 3} more)" if len(resized) > 3 else "")
            + ". It was written with other sizes (hidden_size, n_layers, n_factors, MAX_ITEM_LIST_LENGTH, ...)."
        )
    if hasattr(model, "checkpoint_state_dict"):
        expected = set(model.checkpoint_state_dict().keys())
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
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


def plain_config(config):
    r"""What rebuilds a RecBole ``Config``: the user's external settings plus model and dataset, as plain data.

    A checkpoint stores this instead of the pickled Config, so it loads with ``torch.load(weights_only=True)``;
    ``Config(config_dict=plain)`` then recomputes every derived key (device, data_path, eval settings).

    Args:
        config (recbole.config.Config): RecBole's or the plugin's config.

    Returns:
        dict: plain YAML-like data (str, int, float, bool, None, list, dict).
    """
    plain = _to_plain(config.external_config_dict)
    plain["model"], plain["dataset"] = config.model, config.dataset
    # absolute, so that a checkpoint reloads from any working directory
    plain["data_path"] = os.path.dirname(os.path.abspath(config.final_config_dict["data_path"]))
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
