"""Every model of the results pages (docs/results/) trains, saves a plain-data checkpoint, and tests through the
plugin's run function; the checkpoint reloads with ``weights_only=True`` and scores the test users as before."""

import math

import pytest
import torch
from conftest import tiny_settings

from recbole_flr import load_data_and_model, run_recbole_flr
from recbole_flr.checkpoint import load_checkpoint
from recbole_flr.config import foreign_keys
from recbole_flr.trainer import get_trainer

#: RecBole's feature-aware models read the title FLR reads (``selected_features``)
FEATURE_MODELS = ("SASRecF", "FDSA", "GRU4RecF")
ZOO = ("FLR", "SASRecAllPos", "SASRec", "BERT4Rec", "GRU4Rec", "NARM", "LightSANs", "CORE", "SINE") + FEATURE_MODELS


@pytest.mark.parametrize("model", ZOO)
def test_a_zoo_model_trains_saves_plain_data_and_reloads(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = {"selected_features": ["title"]} if model in FEATURE_MODELS else {}
    settings = tiny_settings(str(tmp_path), epochs=1, grpo_epochs=1, **extra)
    settings = {key: value for key, value in settings.items() if key not in foreign_keys(model, settings)}
    result = run_recbole_flr(model=model, dataset="tiny", config_dict=settings)
    assert all(math.isfinite(v) for v in result["test_result"].values())

    checkpoint = load_checkpoint(result["saved_model_file"], weights_only=True)  # SASRecF & co. pickled a module
    assert all(not isinstance(v, torch.nn.Module) for v in (checkpoint.get("other_parameter") or {}).values())
    config, loaded, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, loaded)
    again = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    assert again == pytest.approx(result["test_result"])  # the reloaded weights are the tested ones
