"""recbole-flr: Factorised Latent Reasoning (FLR) for LLM-based sequential recommendation, as a RecBole plugin."""

from recbole_flr.utils import no_anomaly_detection, numpy_compat, quiet_recbole_warnings

quiet_recbole_warnings()  # RecBole's own deprecation warnings (torch.cuda.amp.GradScaler), not the user's
numpy_compat()  # before any RecBole module reads the numpy aliases that numpy 2 removed
no_anomaly_detection()  # RecBole 1.2.1 turns autograd's anomaly detection on for every model when imported

from recbole_flr.config import Config  # noqa: E402
from recbole_flr.quick_start import load_data_and_model, prepare, run, run_recbole_flr  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Config", "load_data_and_model", "prepare", "run", "run_recbole_flr"]
