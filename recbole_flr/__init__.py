"""recbole-flr: Factorised Latent Reasoning (FLR) for LLM-based sequential recommendation, as a RecBole plugin."""

import importlib

from recbole_flr.utils import no_anomaly_detection, numpy_compat, quiet_recbole_warnings

quiet_recbole_warnings()  # RecBole's own deprecation warnings (torch.cuda.amp.GradScaler), not the user's
numpy_compat()  # before any RecBole module reads the numpy aliases that numpy 2 removed
no_anomaly_detection()  # RecBole 1.2.1 turns autograd's anomaly detection on for every model when imported

__version__ = "0.1.0"
__all__ = ["Config", "load_data_and_model", "prepare", "run", "run_recbole_flr"]
_HOMES = {"Config": "recbole_flr.config"} | dict.fromkeys(__all__[1:], "recbole_flr.quick_start")


def __getattr__(name):
    # PEP 562: the entry points load on first use, with RecBole's config, data and trainer modules, so importing a
    # module that needs none of them (the GRPO maths, the latent module) costs torch and RecBole's models only
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'recbole_flr' has no attribute {name!r}")
