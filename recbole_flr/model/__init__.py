"""FLR models for RecBole, and SASRec trained on all positions as a baseline for FLR's ``train_all_positions``."""

from recbole_flr.model.flr import FLR
from recbole_flr.model.sasrec_allpos import SASRecAllPos

__all__ = ["FLR", "SASRecAllPos"]
