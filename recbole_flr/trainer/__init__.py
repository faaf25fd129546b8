from recbole_flr.trainer.compat import SafeCheckpointMixin
from recbole_flr.trainer.flr_trainer import FLRTrainer

__all__ = ["FLRTrainer", "SafeCheckpointMixin"]
