"""FLR models for RecBole."""

from recbole_flr.model.flr import FLR

__all__ = ["FLR"]
