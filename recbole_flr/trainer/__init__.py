from recbole_flr.trainer.safe_checkpoint import SafeCheckpointMixin
from recbole_flr.trainer.flr_trainer import FLRTrainer

__all__ = ["FLRTrainer", "SafeCheckpointMixin"]
