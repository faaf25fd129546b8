from recbole_flr.trainer.flr_trainer import FLRTrainer
from recbole_flr.trainer.safe_checkpoint import SafeCheckpointMixin

__all__ = ["FLRTrainer", "SafeCheckpointMixin"]
