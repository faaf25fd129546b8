"""
recbole_flr.trainer
###################
The plugin's trainers, and :func:`get_trainer`: a model's trainer class, the plugin's first, else RecBole's with
plugin checkpoints.
"""

from functools import lru_cache

from recbole.trainer import Trainer
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_flr.trainer.flr_trainer import FLRTrainer
from recbole_flr.trainer.safe_checkpoint import SafeCheckpointMixin

__all__ = ["FLRTrainer", "SafeCheckpointMixin", "get_trainer"]

#: the plugin's own trainers, by model name; every other model gets RecBole's trainer with plugin checkpoints
PLUGIN_TRAINERS = {"FLR": FLRTrainer}


def get_trainer(model_type, model_name):
    r"""Find a trainer class: the plugin's (:data:`PLUGIN_TRAINERS`) first, else RecBole's trainer for the
    model, given weights-only-loadable, atomic checkpoints (:class:`SafeCheckpointMixin`).

    Args:
        model_type (ModelType): the model's type.
        model_name (str): model name.

    Returns:
        type: the trainer class.
    """
    if model_name in PLUGIN_TRAINERS:
        return PLUGIN_TRAINERS[model_name]
    return _with_safe_checkpoints(recbole_get_trainer(model_type, model_name))


@lru_cache(maxsize=None)
def _with_safe_checkpoints(trainer_class):
    if not issubclass(trainer_class, Trainer):
        return trainer_class  # e.g. DecisionTreeTrainer: its own checkpoint format, left as RecBole wrote it
    return type(trainer_class.__name__, (SafeCheckpointMixin, trainer_class), {"__module__": __name__})
