"""The explain command on a tiny trained FLR: the user's PNG and JSON, the dataset summary, and its user errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_settings
from matplotlib.image import imread

from recbole_flr import run_recbole_flr
from recbole_flr.explain import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LEN = 10


def explain_settings(folder):
    return tiny_settings(folder, MAX_ITEM_LIST_LENGTH=MAX_LEN, n_factors=2, train_stages=["sft"])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    r"""An FLR and a SASRec checkpoint, each trained for one epoch on ``tiny`` (logs land in the temp dir)."""
    folder = str(tmp_path_factory.mktemp("explain"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        settings = explain_settings(folder)
        flr = run_recbole_flr("FLR", "tiny", config_dict=settings)["saved_model_file"]
        noreg = dict(settings, lambda_orth=0.0, lambda_div=0.0, lambda_sparse=0.0)
        flr_noreg = run_recbole_flr("FLR", "tiny", config_dict=noreg)["saved_model_file"]
        sasrec_settings = tiny_settings(folder, MAX_ITEM_LIST_LENGTH=MAX_LEN)  # FLR's keys are refused
        sasrec = run_recbole_flr("SASRec", "tiny", config_dict=sasrec_settings)["saved_model_file"]
        yield {"FLR": flr, "FLR-noreg": flr_noreg, "SASRec": sasrec, "folder": folder}


def explain(*argv):
    main([str(a) for a in argv])


def test_one_user_png_and_json(checkpoints, tmp_path):
    png = tmp_path / "user5.png"
    explain("--model_file", checkpoints["FLR"], "--user_id", 5, "--output", png)
    image = imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    facts = json.loads((tmp_path / "user5.json").read_text())
    n_history = len(facts["history"])
    assert facts["user_id"] == "5" and 1 <= n_history <= MAX_LEN
    assert len(facts["factors"]) == 2
    assert sum(f["gate"] for f in facts["factors"]) == pytest.approx(1.0, abs=1e-5)
    for factor in facts["factors"]:
        attention = np.array(factor["attention"])
        assert attention.shape == (MAX_LEN,)
        assert attention[:n_history].sum() == pytest.approx(1.0, abs=1e-5)
        assert (attention[:n_history] >= 0).all() and (attention[n_history:] == 0).all()
    items = [t["item_id"] for t in facts["topk"]]
    assert len(items) == 10 and len(set(items)) == 10 and "[PAD]" not in items
    scores = [t["score"] for t in facts["topk"]]
    assert scores == sorted(scores, reverse=True)
    assert isinstance(facts["target"]["rank"], int) and facts["target"]["rank"] >= 1
    # titles come from the .item file; item 7's title is empty, so its token stands in
    titles = {h["item_id"]: h["title"] for h in facts["history"] + facts["topk"]}
    for item, title in titles.items():
        assert title == item if item == "7" else len(title.split()) == 3


def test_exclude_history_never_recommends_a_history_item(checkpoints, tmp_path):
    explain("--model_file", checkpoints["FLR"], "--user_id", 3, "--output", tmp_path / "u.png", "--exclude_history")
    facts = json.loads((tmp_path / "u.json").read_text())
    history = {h["item_id"] for h in facts["history"]}
    assert not history & {t["item_id"] for t in facts["topk"]}
    assert not any(t["in_history"] for t in facts["topk"])


def test_summary_with_comparison(checkpoints, tmp_path):
    explain(
        "--model_file",
        checkpoints["FLR"],
        "--summary",
        "--compare",
        checkpoints["FLR-noreg"],
        "--feature",
        "title",
        "--output_dir",
        tmp_path,
        "--name",
        "factors",
    )
    assert imread(str(tmp_path / "factors.png")).ndim == 3
    summary = json.loads((tmp_path / "factors.json").read_text())
    on, off = summary["models"].values()  # in the order given: --model_file, then --compare
    assert on["model_file"] == checkpoints["FLR"] and off["model_file"] == checkpoints["FLR-noreg"]
    assert list(summary["models"])[1] == "regularisers off" and list(summary["models"])[0].startswith("regularisers on")
    assert on["lambda"] != off["lambda"] and on["gate"] != off["gate"]  # two models, not one twice
    for model in summary["models"].values():
        assert model["n_histories"] == 40
        assert sum(model["gate"]) == pytest.approx(1.0, abs=1e-5)
        assert np.diag(model["attention_overlap"]) == pytest.approx(1.0, abs=1e-6)  # a map shares all of itself
        assert np.diag(model["factor_cosine"]) == pytest.approx(1.0, abs=1e-6)
        assert all(0 <= e <= 1 + 1e-6 for e in model["entropy"])
        feature = model["feature"]
        assert "space" in feature["values"]
        assert np.array(feature["distribution"]).sum(1) == pytest.approx(1.0)
        assert sum(feature["history_distribution"]) == pytest.approx(1.0)


def test_unknown_user_is_a_one_line_error(checkpoints, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        explain("--model_file", checkpoints["FLR"], "--user_id", "no-such-user", "--output", tmp_path / "x.png")
    message = str(exit_info.value.code)
    assert "'no-such-user'" in message and "valid ids look like: 1, 2" in message
    # the plugin's one-line report of a user error, not another exception's text
    first, *rest = message.splitlines()
    assert first.startswith("recbole_flr: error: ") and rest == ["(set RECBOLE_FLR_TRACEBACK=1 to see the traceback)"]
    assert not (tmp_path / "x.png").exists()


def test_checkpoint_of_another_model_is_refused(checkpoints):
    out = subprocess.run(
        [sys.executable, "-m", "recbole_flr.explain", "--model_file", checkpoints["SASRec"], "--user_id", "5"],
        capture_output=True,
        text=True,
        cwd=checkpoints["folder"],
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert out.returncode != 0
    assert "explain needs an FLR checkpoint" in out.stderr and "SASRec" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        explain("--model_file", tmp_path / "nothing.pth", "--user_id", 1)
    assert "does not exist" in str(exit_info.value.code)


def _synthetic_explanation(n_history, title):
    rng = np.random.default_rng(0)
    attention = []
    for _ in range(2):  # nearly uniform, as after a short training
        raw = 1.0 + 0.01 * rng.standard_normal(n_history)
        attention.append(list(raw / raw.sum()))
    history = [{"item_id": str(i), "title": f"{title} {i}"} for i in range(n_history)]
    topk = [
        {
            "rank": r + 1,
            "item_id": str(100 + r),
            "title": f"{title} top {r}",
            "score": 5.0 - 0.1 * r,
            "in_history": False,
        }
        for r in range(10)
    ]
    return {
        "dataset": "tiny",
        "user_id": "5",
        "history": history,
        "topk": topk,
        "target": {"item_id": "100", "title": title, "rank": 1},
        "factors": [{"factor": k, "gate": 0.5, "attention": attention[k]} for k in range(2)],
    }


@pytest.mark.parametrize("n_history", [8, 30])
def test_nearly_uniform_attention_still_fills_the_colour_scale_and_bars_show_scores(tmp_path, n_history):
    from recbole_flr.explain import plot_user

    drawn = plot_user(_synthetic_explanation(n_history, "Movie"), str(tmp_path / "u.png"), max_history=20)
    # the colour is the deviation from uniform on a symmetric scale set by the largest one: the full range is used
    assert np.abs(drawn["colour"]).max() == pytest.approx(drawn["vmax"])
    assert drawn["vmax"] < 0.01 and "uniform" in drawn["colour_label"]
    assert drawn["bar_labels"][:2] == ["5.000", "4.900"]


def test_cjk_and_emoji_titles_raise_no_warning_flood(tmp_path, recwarn):
    from recbole_flr.explain import plot_user

    plot_user(_synthetic_explanation(8, "千と千尋の神隠し 🎬"), str(tmp_path / "u.png"))
    assert not [w for w in recwarn if "Glyph" in str(w.message) or "missing from font" in str(w.message)]
    assert (tmp_path / "u.png").stat().st_size > 0


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--output", "{tmp}/no_folder/u.png"], "the folder {tmp}/no_folder does not exist"),
        (["--output", "{tmp}/u.xyz"], "cannot write '.xyz' images"),
        (["--json", "{tmp}/no_folder/u.json"], "the folder {tmp}/no_folder does not exist"),
        (["--topk", "0"], "2"),  # argparse's exit status: --topk must be at least 1
    ],
)
def test_outputs_are_checked_before_the_data_is_loaded(checkpoints, tmp_path, monkeypatch, options, expected):
    import recbole_flr.quick_start

    def loaded(*args, **kwargs):
        raise AssertionError("the data was loaded before the error")

    monkeypatch.setattr(recbole_flr.quick_start, "load_data_and_model", loaded)
    with pytest.raises(SystemExit) as exit_info:
        explain("--model_file", checkpoints["FLR"], "--user_id", 5, *[o.format(tmp=tmp_path) for o in options])
    assert expected.format(tmp=tmp_path) in str(exit_info.value.code)


def test_output_without_suffix_prints_the_png_it_writes(checkpoints, tmp_path, capsys):
    explain("--model_file", checkpoints["FLR"], "--user_id", 5, "--output", tmp_path / "user5")
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "user5.png"), str(tmp_path / "user5.json")]
    assert all(os.path.isfile(path) for path in printed)


def test_a_last_checkpoint_is_explained_with_a_warning(checkpoints, tmp_path, caplog):
    from recbole_flr.checkpoint import last_checkpoint_file

    last = last_checkpoint_file(checkpoints["FLR"])
    caplog.set_level("WARNING")  # the fixture's runs (state: ERROR) left the root logger at ERROR in this process
    explain("--model_file", last, "--user_id", 5, "--output", tmp_path / "u.png")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("is a -last.pth state" in w and checkpoints["FLR"] in w for w in warnings), warnings


def test_data_path_points_explain_at_a_moved_dataset(checkpoints, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(SystemExit) as exit_info:  # the dataset error's advice, --data_path, is an option of explain
        explain("--model_file", checkpoints["FLR"], "--user_id", 5, "--data_path", tmp_path / "elsewhere")
    assert f"{tmp_path / 'elsewhere' / 'tiny'} does not exist" in str(exit_info.value.code)
