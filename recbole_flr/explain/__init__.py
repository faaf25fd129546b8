"""
recbole_flr.explain
###################
What a trained FLR model looks at: for one user, its top-k items and each factor's attention over the user's
history with the factor's gate weight; for a whole test set, what each factor specialises in.

One user (a PNG for people, a JSON with the same facts for scripts)::

    python -m recbole_flr.explain --model_file saved/FLR-ml-100k-....pth --user_id 196 --output user196.png

The dataset-level summary, compared with a model trained with the regularisers off::

    python -m recbole_flr.explain --model_file saved/FLR-a.pth --summary --compare saved/FLR-noreg.pth \\
        --feature class --output_dir docs/images

The user's history is that of the user's test sample (RecBole's test dataloader: with the leave-one-out split,
every item before the held-out test item, at most ``MAX_ITEM_LIST_LENGTH`` of them). The attention and gates are
those of the last latent reasoning step (``FLR.reason``), so they are the ones that made the thought the model
ranks with. Items are ranked as RecBole's full-sort evaluation of a sequential model ranks them: every item but the
padding item 0, history items included; ``--exclude_history`` also leaves out the items of the shown history.

The facts are computed in :mod:`recbole_flr.explain.analysis` and drawn in :mod:`recbole_flr.explain.plots`; this module
is the command line.
"""

import argparse
import json
import logging
import os
import sys

from recbole_flr.errors import USER_ERRORS, UserFileNotFoundError, UserInputError, user_error_message
from recbole_flr.explain.analysis import (  # noqa: F401  (the package's API)
    TEXT_FIELDS,
    check_flr_checkpoint,
    explain_user,
    item_feature,
    item_titles,
    load_flr,
    summarise,
    user_index,
)
from recbole_flr.explain.plots import plot_summary, plot_user, shorten  # noqa: F401


def _fmt(value):
    if value is None:
        return "n/a"
    return "[" + " ".join(f"{v:.2f}" for v in value) + "]" if isinstance(value, list) else f"{value:.3f}"


# --- command line ----------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m recbole_flr.explain",
        description=__doc__.split("###\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model_file", required=True, help="an FLR checkpoint")
    parser.add_argument("--user_id", help="external user id (as in the dataset's .inter file)")
    parser.add_argument("--output", help="PNG of one user (default: explain-<dataset>-user<id>.png)")
    parser.add_argument("--json", help="JSON of one user (default: the PNG's name with .json)")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--max_history", type=int, default=20, help="most recent history items drawn")
    parser.add_argument("--exclude_history", action="store_true", help="never recommend an item of the history")
    parser.add_argument("--summary", action="store_true", help="what each factor specialises in, over the test set")
    parser.add_argument("--compare", help="a second FLR checkpoint for the summary (e.g. regularisers off)")
    parser.add_argument("--feature", help="item field to profile the factors with (ml-1m: genre, ml-100k: class)")
    parser.add_argument("--output_dir", default=".", help="folder of the summary's PNG and JSON")
    parser.add_argument("--name", help="file name stem of the summary (default: factors-<dataset>)")
    parser.add_argument(
        "--data_path", help="folder holding the dataset's folder, if it is no longer where the model was trained"
    )
    args = parser.parse_args(argv)
    if not args.summary and args.user_id is None:
        parser.error("give --user_id for one user, or --summary for the whole test set")
    if args.compare and not args.summary:
        parser.error("--compare needs --summary")
    for option in ("topk", "max_history"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1 (got {getattr(args, option)})")
    return args


def _image_formats():
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def check_output(option, path, image=True):
    r"""What an output path must be before anything is loaded: in a folder that exists and, for an image, with a
    suffix matplotlib can write; no suffix means ``.png``, as matplotlib writes it.

    Returns:
        str: the path that will be written.
    """
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    if image and not suffix:
        path, suffix = path + ".png", "png"
    if image and suffix not in _image_formats():
        raise UserInputError(
            f"{option} {path}: matplotlib cannot write '.{suffix}' images; use one of {_image_formats()}."
        )
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        raise UserFileNotFoundError(f"{option} {path}: the folder {folder} does not exist.")
    return path


def run(args):
    r"""Do what ``args`` ask; return the paths written."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # load_data_and_model logs the whole config at INFO
    try:
        return _run(args)
    finally:
        logging.disable(previous)


def _run(args):
    # everything that needs no data first: the output paths, the checkpoints (a second --compare one too)
    png = check_output("--output", args.output) if args.output else None
    out_json = check_output("--json", args.json, image=False) if args.json else None
    for model_file in [args.model_file] + ([args.compare] if args.compare else []):
        check_flr_checkpoint(model_file)
    if args.summary and os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UserInputError(f"--output_dir {args.output_dir} is a file, not a folder.")
    if args.data_path and not os.path.isdir(args.data_path):
        raise UserFileNotFoundError(f"--data_path {args.data_path} is not a folder.")
    if args.user_id is not None and not args.summary:
        _, model, dataset, _, _, test_data = load_flr(args.model_file, args.data_path, warn_last=False)
        explanation = explain_user(model, dataset, test_data, args.user_id, args.topk, args.exclude_history)
        png = png or f"explain-{dataset.dataset_name}-user{args.user_id}.png"
        out_json = out_json or os.path.splitext(png)[0] + ".json"
        plot_user(explanation, png, args.max_history)
        with open(out_json, "w") as f:
            json.dump(explanation, f, indent=2, ensure_ascii=False)
        return [png, out_json]
    summaries, files = {}, [(args.model_file, "A")] + ([(args.compare, "B")] if args.compare else [])
    dataset_name = None
    for model_file, tag in files:
        config, model, dataset, _, _, test_data = load_flr(model_file, args.data_path, warn_last=False)
        feature = item_feature(config, dataset, args.feature) if args.feature else None
        summary = summarise(model, test_data, feature)
        summary["model_file"] = model_file
        lambdas = summary["lambda"]
        off = not any(lambdas.values())
        label = (
            "regularisers off"
            if off
            else f"regularisers on: λ orth {lambdas['orth']:g}, div {lambdas['div']:g}, sparse {lambdas['sparse']:g}"
        )
        label = label if label not in summaries else f"{label} ({tag})"
        summaries[label] = summary
        dataset_name = dataset.dataset_name
    os.makedirs(args.output_dir, exist_ok=True)
    stem = os.path.join(args.output_dir, args.name or f"factors-{dataset_name}")
    title = f"FLR factors over the {dataset_name} test histories" + (
        f", profiled by '{args.feature}'" if args.feature else ""
    )
    for label, summary in summaries.items():
        pairs = summary["mean_pairwise"]
        print(
            f"{label}: gates {_fmt(summary['gate'])}, attention entropy {_fmt(summary['entropy'])}, mean pairwise "
            f"shared attention {_fmt(pairs['attention_overlap'])}, attention cosine "
            f"{_fmt(pairs['attention_cosine'])}, factor cosine {_fmt(pairs['factor_cosine'])}"
        )
    plot_summary(summaries, stem + ".png", title)
    with open(stem + ".json", "w") as f:
        json.dump(
            {"dataset": dataset_name, "feature": args.feature, "models": summaries}, f, indent=2, ensure_ascii=False
        )
    return [stem + ".png", stem + ".json"]


def main(argv=None):
    args = parse_args(argv)
    saved_argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config reads --key=value from the command line
    try:
        for path in run(args):
            print(path)
    except USER_ERRORS as error:
        sys.exit(user_error_message(error))
    finally:
        sys.argv = saved_argv
