"""
recbole_flr.trainer.compat
##########################
Old import paths, kept for code written against recbole-flr 0.1.0: the checkpoint files are
:mod:`recbole_flr.checkpoint`, the errors :mod:`recbole_flr.errors`, the trainer mixin
:mod:`recbole_flr.trainer.safe_checkpoint`. Nothing in the package imports this module.
"""

from recbole_flr.checkpoint import (  # noqa: F401
    LAST_SUFFIX,
    atomic_torch_save,
    best_checkpoint_file,
    checkpoint_state_dict,
    get_rng_state,
    last_checkpoint_file,
    load_checkpoint,
    load_model_state,
    pickles_recbole_config,
    plain_result,
    set_rng_state,
)
from recbole_flr.errors import CheckpointError, NonFiniteLossError  # noqa: F401
from recbole_flr.trainer.safe_checkpoint import SafeCheckpointMixin  # noqa: F401
