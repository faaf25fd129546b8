"""The plugin itself: config layering, lookups, the run script, checkpoints, and RecBole 1.2.1 on today's stack."""

import glob
import math
import os
import subprocess
import sys
import urllib.error

import pytest
import torch
import yaml

from recbole_flr import Config, load_data_and_model, prepare, run_recbole_flr
from recbole_flr.checkpoint import load_checkpoint
from recbole_flr.errors import CheckpointError
from recbole_flr.trainer import SafeCheckpointMixin, get_trainer
from recbole_flr.utils import DatasetNotFoundError, get_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLR_YAML = os.path.join(REPO, "recbole_flr", "properties", "model", "FLR.yaml")


def python(code):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


# --- config layering -------------------------------------------------------------------------------------------------


def test_plugin_model_yaml_is_the_default(tiny_config_dict):
    with open(FLR_YAML) as f:
        default = yaml.safe_load(f)["n_factors"]
    config = Config(model="FLR", dataset="tiny", config_dict=tiny_config_dict)
    assert config["n_factors"] == default
    assert config["valid_metric"] == "NDCG@10"


def test_user_yaml_then_config_dict_then_command_line_override(tiny_config_dict, tmp_path, monkeypatch):
    user_yaml = tmp_path / "user.yaml"
    user_yaml.write_text("n_factors: 5\nlambda_orth: 0.5\nlatent_steps: 3\n")
    files = [str(user_yaml)]
    assert Config(model="FLR", dataset="tiny", config_file_list=files, config_dict=tiny_config_dict)["n_factors"] == 5

    config = Config(
        model="FLR", dataset="tiny", config_file_list=files, config_dict=dict(tiny_config_dict, n_factors=6)
    )
    assert (config["n_factors"], config["lambda_orth"]) == (6, 0.5)

    monkeypatch.setattr(sys, "argv", ["run_recbole_flr.py", "--n_factors=7"])
    config = Config(
        model="FLR", dataset="tiny", config_file_list=files, config_dict=dict(tiny_config_dict, n_factors=6)
    )
    assert (config["n_factors"], config["lambda_orth"], config["latent_steps"]) == (7, 0.5, 3)


def test_plugin_dataset_yaml_beats_recbole_default_and_loses_to_user():
    shared = os.path.join(REPO, "..", "shared", "datasets")
    config = Config(model="SASRec", dataset="amazon-games", config_dict={"data_path": shared})
    assert config["MAX_ITEM_LIST_LENGTH"] == 20  # RecBole's own default is 50
    config = Config(
        model="SASRec", dataset="amazon-games", config_dict={"data_path": shared, "MAX_ITEM_LIST_LENGTH": 30}
    )
    assert config["MAX_ITEM_LIST_LENGTH"] == 30


def test_malformed_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_factors: [3\n")
    with pytest.raises(ValueError, match="bad.yaml is not valid YAML"):
        Config(model="FLR", dataset="tiny", config_file_list=[str(bad)])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        Config(model="FLR", dataset="tiny", config_file_list=[str(tmp_path / "nope.yaml")])


# --- lookups ---------------------------------------------------------------------------------------------------------


def test_model_lookup_prefers_plugin_then_falls_back_to_recbole():
    from recbole.model.sequential_recommender.sasrec import SASRec

    assert get_model("FLR").__module__.startswith("recbole_flr.model")
    assert get_model("SASRec") is SASRec
    with pytest.raises(ValueError, match=r"Unknown model \[Nope\]"):
        get_model("Nope")


def test_trainer_lookup_prefers_plugin_then_wraps_recbole():
    from recbole.trainer import Trainer
    from recbole.utils import ModelType

    from recbole_flr.trainer import FLRTrainer

    assert get_trainer(ModelType.SEQUENTIAL, "FLR") is FLRTrainer
    sasrec_trainer = get_trainer(ModelType.SEQUENTIAL, "SASRec")
    assert issubclass(sasrec_trainer, Trainer) and issubclass(sasrec_trainer, SafeCheckpointMixin)
    assert sasrec_trainer is get_trainer(ModelType.SEQUENTIAL, "SASRec")  # one class, not one per call


# The package's floors, bottom first: a module imports only from its own floor or below (no import loop, no upward
# arrow). recbole_flr.utils finds models by name with importlib, as RecBole's own lookup does; recbole_flr.trainer
# finds trainers.
FLOORS = [
    ("errors", "checkpoint", "data_checks"),
    ("utils",),
    ("config",),
    ("model",),
    ("trainer",),
    ("quick_start", "robustness", "run_files"),
    ("hyper",),
    ("explain",),
    ("__init__",),
]


def _floor(module):
    parts = module.split(".")[1:] or ["__init__"]
    if parts == ["__init__"]:
        return len(FLOORS) - 1
    return next(i for i, names in enumerate(FLOORS) if parts[0] in names)


def test_package_imports_only_downward():
    import ast

    root = os.path.join(REPO, "recbole_flr")
    upward = []
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = "recbole_flr." + os.path.relpath(path, root)[:-3].replace(os.sep, ".")
            module = module.removesuffix(".__init__")
            with open(path) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                targets = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                for target in targets:
                    if target.startswith("recbole_flr") and target != module and _floor(target) > _floor(module):
                        upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_black_formats_every_line():
    # `black --check` passes over a line marked "fmt: skip" (or a block between "fmt: off" and "on"): the house format
    # is black's, with no opt-outs. The markers are spelled split here, so this file does not match itself.
    markers = [f"# fmt: {word}" for word in ("skip", "off")]
    found = []
    for folder in ("recbole_flr", "benchmarks", "tests", "run_recbole_flr.py", "setup.py"):
        path = os.path.join(REPO, folder)
        files = [path] if path.endswith(".py") else glob.glob(os.path.join(path, "**", "*.py"), recursive=True)
        for name in files:
            if os.sep + "scratch" + os.sep in name:
                continue  # benchmark scratch: git-ignored output
            with open(name) as f:
                found += [f"{name}:{i}" for i, line in enumerate(f, 1) if any(m in line for m in markers)]
    assert not found, found


# --- runs and checkpoints --------------------------------------------------------------------------------------------


@pytest.fixture
def sasrec_run(tiny_config_dict):
    return run_recbole_flr(model="SASRec", dataset="tiny", config_dict=tiny_config_dict)


def test_one_epoch_sasrec_gives_finite_metrics(sasrec_run):
    test_result = sasrec_run["test_result"]
    assert {"recall@10", "ndcg@10", "mrr@10", "hit@10"} <= set(test_result)
    assert all(math.isfinite(value) and 0 <= value <= 1 for value in test_result.values())
    assert math.isfinite(sasrec_run["best_valid_score"])


def test_checkpoint_is_weights_only_and_recbole_evaluate_reloads_it(sasrec_run):
    path = sasrec_run["saved_model_file"]
    checkpoint = torch.load(path, weights_only=True)  # RecBole's own checkpoints fail here on torch >= 2.6
    assert checkpoint["config"]["model"] == "SASRec" and "item_embedding.weight" in checkpoint["state_dict"]

    # RecBole's unchanged Trainer.evaluate(load_best_model=True) on a fresh model reproduces the test metrics
    from recbole.trainer import Trainer

    config, model, _, _, _, test_data = load_data_and_model(path)
    with torch.no_grad():
        model.item_embedding.weight.zero_()  # so only a reload can give the trained metrics back
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)
    result = Trainer.evaluate(trainer, test_data, load_best_model=True, model_file=path)
    assert result == sasrec_run["test_result"]


def test_load_data_and_model_rebuilds_the_trained_model(sasrec_run):
    config, model, _, _, _, test_data = load_data_and_model(sasrec_run["saved_model_file"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    assert trainer.evaluate(test_data, load_best_model=False) == sasrec_run["test_result"]


def test_two_trainers_started_together_never_share_a_checkpoint(tiny_config_dict):
    config, model, *_ = prepare("SASRec", "tiny", config_dict=tiny_config_dict)
    trainer_class = get_trainer(config["MODEL_TYPE"], "SASRec")
    assert trainer_class(config, model).saved_model_file != trainer_class(config, model).saved_model_file


def test_recbole_pickled_checkpoint_needs_an_explicit_choice(tiny_config_dict, tmp_path):
    config = Config(model="SASRec", dataset="tiny", config_dict=tiny_config_dict)
    legacy = tmp_path / "legacy.pth"
    torch.save({"config": config, "state_dict": {}}, legacy, pickle_protocol=4)  # what RecBole 1.2.1 writes
    with pytest.raises(CheckpointError, match="weights_only=False.*executes code"):
        load_checkpoint(str(legacy))
    assert load_checkpoint(str(legacy), weights_only=False)["config"]["model"] == "SASRec"


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", b"\x80\x04K\x01.", None])
def test_unsafe_advice_only_for_real_recbole_pickles(tmp_path, content):
    other = tmp_path / "other.pth"
    if content is None:  # a torch pickle of some other class: unknown origin
        torch.save({"config": torch.nn.Linear(1, 1), "state_dict": {}}, other)
    else:
        other.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(str(other))
    assert "other.pth" in str(error.value) and "weights_only=False" not in str(error.value)


def test_truncated_checkpoint_is_a_clear_error(sasrec_run, tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(sasrec_run["saved_model_file"], "rb").read()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(str(truncated))


# --- RecBole 1.2.1 on today's stack ------------------------------------------------------------------------------


def test_numpy2_breaks_recbole_config_and_the_plugin_config_works():
    code = "from recbole.config import Config; Config(model='SASRec', dataset='ml-100k', config_dict={'gpu_id': ''})"
    plain = python(code)
    if int(__import__("numpy").__version__.split(".")[0]) >= 2:
        assert plain.returncode != 0 and "float_" in plain.stderr  # the bug the plugin fixes
    fixed = python(code.replace("from recbole.config import Config", "from recbole_flr import Config"))
    assert fixed.returncode == 0, fixed.stderr


def test_recbole_turns_on_anomaly_detection_and_the_plugin_turns_it_off():
    check = "import torch; print(torch.is_anomaly_enabled())"
    plain = python("from recbole.model.sequential_recommender import SASRec; " + check)
    assert plain.stdout.strip() == "True", plain.stderr  # RecBole 1.2.1's sine.py, at import
    for code in (
        "import recbole_flr; from recbole.utils import get_model; get_model('SASRec'); get_model('SINE'); ",
        "from recbole.model.sequential_recommender import SASRec; import recbole_flr; ",  # RecBole imported first
        "from recbole_flr.model import FLR; ",
    ):
        result = python(code + check)
        assert result.stdout.strip() == "False", (code, result.stderr)


def test_the_grpo_maths_import_without_recbole_config_data_or_trainer():
    # the package's entry points load on first use: `import recbole_flr` (and so any of its pure modules) pays for
    # torch and RecBole's models (imported on purpose, see no_anomaly_detection), not for RecBole's config,
    # evaluation and trainer modules; the entry points still resolve
    code = (
        "import sys, recbole_flr.trainer.grpo\n"
        "heavy = [m for m in ('recbole.config', 'recbole.trainer', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from recbole_flr import Config, run_recbole_flr\n"
        "from recbole_flr.trainer import FLRTrainer, SafeCheckpointMixin\n"
        "assert issubclass(FLRTrainer, SafeCheckpointMixin) and Config.__module__ == 'recbole_flr.config'\n"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr


def test_plugin_paths_never_import_ray(tiny_config_dict):
    code = (
        "import sys, recbole_flr, recbole_flr.quick_start, recbole_flr.trainer, recbole_flr.model\n"
        "from recbole_flr.trainer import get_trainer\n"
        "from recbole.utils import ModelType\n"
        "get_trainer(ModelType.SEQUENTIAL, 'SASRec')\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr


def test_empty_title_cell_is_an_empty_sequence(tiny_config_dict):
    # pandas 3 (copy-on-write) makes RecBole's in-place fillna a no-op: the empty cell stays NaN and the token_seq
    # parser crashes on it. setup.py pins pandas < 3; this fails if that pin is lost.
    from recbole.data import create_dataset

    dataset = create_dataset(Config(model="SASRec", dataset="tiny", config_dict=tiny_config_dict))
    titles = dataset.item_feat["title"]
    empty = dataset.token2id("item_id", "7")
    assert titles[empty].sum().item() == 0 and titles[empty + 1].sum().item() > 0


# --- data and the command line ---------------------------------------------------------------------------------------


def test_missing_dataset_names_dataset_and_folder(tiny_config_dict, tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        run_recbole_flr(model="SASRec", dataset="nowhere", config_dict=dict(tiny_config_dict, dataset="nowhere"))
    message = str(error.value)
    assert "nowhere" in message and tiny_config_dict["data_path"] in message and ".inter" in message


def test_failed_download_is_one_clear_error(tiny_config_dict, monkeypatch):
    import recbole.utils.url

    def offline(url, folder):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(recbole.utils.url, "download_url", offline)
    with pytest.raises(DatasetNotFoundError, match=r"\[ml-1m\].*download failed"):
        run_recbole_flr(model="SASRec", dataset="ml-1m", config_dict=dict(tiny_config_dict, dataset="ml-1m"))
    assert not os.path.exists(os.path.join(tiny_config_dict["data_path"], "ml-1m"))  # no half-made folder


def run_script(*args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "run_recbole_flr.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def test_run_script_trains_sasrec_with_recbole_interface(tiny_dataset_dir, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("load_col: {inter: [user_id, item_id, timestamp]}\nMAX_ITEM_LIST_LENGTH: 10\n")
    small = tmp_path / "small.yaml"
    small.write_text("hidden_size: 16\ninner_size: 32\nn_layers: 1\ntrain_batch_size: 64\n")
    result = run_script(
        "--model=SASRec",
        "--dataset=tiny",
        f"--data_path={tiny_dataset_dir}",
        "--epochs=1",
        f"--config_files={extra} {small}",
        "--show_progress=False",
        "--gpu_id=",
        "--nproc=1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "test result" in log and "hidden_size=16" in log and "Saving current" in log


def test_run_script_reports_user_errors_without_traceback(tmp_path):
    result = run_script("--model=Nope", "--dataset=ml-100k", cwd=tmp_path)
    assert result.returncode != 0
    assert "Unknown model [Nope]" in result.stderr and "Traceback" not in result.stderr


def test_protocol_file_sets_the_design_protocol_for_any_model(tiny_config_dict):
    protocol = os.path.join(REPO, "recbole_flr", "properties", "protocol.yaml")
    for model in ("SASRec", "FLR"):
        config = Config(
            model=model,
            dataset="tiny",
            config_file_list=[protocol],
            config_dict={k: v for k, v in tiny_config_dict.items() if k not in ("metrics", "topk", "valid_metric")},
        )
        assert (config["valid_metric"], config["topk"]) == ("NDCG@10", [5, 10, 20])
        assert config["eval_args"]["split"] == {"LS": "valid_and_test"} and config["eval_args"]["order"] == "TO"
