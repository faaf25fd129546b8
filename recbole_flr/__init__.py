"""recbole-flr: Factorised Latent Reasoning (FLR) for LLM-based sequential recommendation, as a RecBole plugin."""

from recbole_flr.utils import numpy_compat

numpy_compat()  # before any RecBole module reads the numpy aliases that numpy 2 removed

from recbole_flr.config import Config  # noqa: E402
from recbole_flr.quick_start import load_data_and_model, run, run_recbole_flr  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Config", "load_data_and_model", "run", "run_recbole_flr"]
