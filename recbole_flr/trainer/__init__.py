"""
recbole_flr.trainer
###################
The plugin's trainers, and :func:`get_trainer`: a model's trainer class, the plugin's first, else RecBole's with
plugin checkpoints.
"""

import importlib
from functools import lru_cache

__all__ = ["FLRTrainer", "SafeCheckpointMixin", "get_trainer"]
_HOMES = {"FLRTrainer": "recbole_flr.trainer.flr_trainer", "SafeCheckpointMixin": "recbole_flr.trainer.safe_checkpoint"}


def __getattr__(name):
    # PEP 562: the trainers load on first use, so importing recbole_flr.trainer.grpo (pure maths) does not import
    # RecBole's trainer, data and evaluation modules
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'recbole_flr.trainer' has no attribute {name!r}")


def get_trainer(model_type, model_name):
    r"""Find a trainer class: the plugin's own (FLR's :class:`FLRTrainer`) first, else RecBole's trainer for the
    model, given weights-only-loadable, atomic checkpoints (:class:`SafeCheckpointMixin`).

    Args:
        model_type (ModelType): the model's type.
        model_name (str): model name.

    Returns:
        type: the trainer class.
    """
    from recbole.utils import get_trainer as recbole_get_trainer

    from recbole_flr.trainer.flr_trainer import FLRTrainer

    if model_name == "FLR":
        return FLRTrainer
    return _with_safe_checkpoints(recbole_get_trainer(model_type, model_name))


@lru_cache(maxsize=None)
def _with_safe_checkpoints(trainer_class):
    from recbole.trainer import Trainer

    from recbole_flr.trainer.safe_checkpoint import SafeCheckpointMixin

    if not issubclass(trainer_class, Trainer):
        return trainer_class  # e.g. DecisionTreeTrainer: its own checkpoint format, left as RecBole wrote it
    return type(trainer_class.__name__, (SafeCheckpointMixin, trainer_class), {"__module__": __name__})
