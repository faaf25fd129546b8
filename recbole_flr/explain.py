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
"""

import argparse
import csv
import json
import logging
import os
import sys
import textwrap

import numpy as np
import torch

from recbole_flr.checkpoint import load_checkpoint
from recbole_flr.errors import USER_ERRORS, CheckpointError, UserFileNotFoundError, UserInputError, user_error_message

TEXT_FIELDS = ("movie_title", "title")
MIN_SHARE = 0.005  # feature values rarer than this in the histories are left out of the plot (noisy ratios)


# --- loading ---------------------------------------------------------------------------------------------------------


def load_flr(model_file):
    r"""``load_data_and_model`` for an FLR checkpoint; any other checkpoint is refused before the data is loaded.

    Returns:
        tuple: (config, model, dataset, train_data, valid_data, test_data)
    """
    from recbole_flr.quick_start import load_data_and_model

    checkpoint = load_checkpoint(model_file)
    model_name = checkpoint["config"].get("model") if isinstance(checkpoint["config"], dict) else None
    if model_name != "FLR":
        raise CheckpointError(
            f"explain needs an FLR checkpoint, but {model_file} holds a {model_name or 'unknown'} model: only FLR has "
            "preference factors, attention and gates to show."
        )
    del checkpoint
    return load_data_and_model(model_file)


def item_titles(dataset, text_field=None):
    r"""A readable name for every internal item id: its title when the dataset has a text field, else its token.

    Args:
        dataset (Dataset): RecBole dataset.
        text_field (str, optional): a token_seq item field; by default ``movie_title`` or ``title`` when loaded.

    Returns:
        list: ``names[i]`` for internal item id ``i`` (``names[0]`` is ``'[PAD]'``).
    """
    tokens = [str(token) for token in dataset.field2id_token[dataset.iid_field]]
    columns = list(dataset.item_feat.columns) if dataset.item_feat is not None else []
    field = text_field or next((name for name in TEXT_FIELDS if name in columns), None)
    if field is None or field not in columns:
        return tokens
    words = dataset.field2id_token[field]
    names = []
    for token, row in zip(tokens, dataset.item_feat[field].numpy()):
        title = " ".join(words[row[row > 0]].tolist())
        names.append(title or token)
    return names


def shorten(text, width=38):
    r"""``text`` cut to ``width`` characters at a word boundary where possible, with an ellipsis."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if " " in cut[width // 2 :]:  # end at a word boundary unless that loses more than half
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,:;-(/") + "…"


def user_index(dataset, test_data, user_id):
    r"""The row of ``user_id`` (an external token) in the test samples; ValueError naming valid ids when absent."""
    uid_field = dataset.uid_field
    test_uids = test_data._dataset.inter_feat[uid_field].numpy()
    examples = ", ".join(str(dataset.id2token(uid_field, int(u))) for u in test_uids[:5])
    token = str(user_id)
    if token not in dataset.field2token_id[uid_field]:
        raise UserInputError(f"user id '{token}' is not in dataset '{dataset.dataset_name}' (valid ids look like: "
                         f"{examples}, ...).")  # fmt: skip
    rows = np.flatnonzero(test_uids == dataset.token2id(uid_field, token))
    if rows.size == 0:
        raise UserInputError(f"user id '{token}' has no test sample in dataset '{dataset.dataset_name}' (too short a "
                         f"history for the split); users with one look like: {examples}, ...")  # fmt: skip
    return int(rows[-1])


# --- one user --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def explain_user(model, dataset, test_data, user_id, topk=10, exclude_history=False):
    r"""The facts behind one user's recommendation.

    Args:
        model (FLR): trained model, in eval mode.
        dataset (Dataset): the full dataset (for tokens and titles).
        test_data (FullSortEvalDataLoader): RecBole's test dataloader; the user's history is its test sample.
        user_id (str or int): external user token.
        topk (int): how many items to list.
        exclude_history (bool): also leave out the items of the history (RecBole's sequential evaluation does not).

    Returns:
        dict: plain data (JSON-serialisable): ``user_id``, ``history`` (real items, oldest first), ``target``
        (the held-out test item and its rank), ``topk``, ``factors`` (per factor: ``gate``, ``attention`` over all
        ``max_seq_length`` positions, 0 on padding), ``all_gates`` [T][K].
    """
    row = user_index(dataset, test_data, user_id)
    sample = test_data._dataset.inter_feat[[row]].to(model.device)
    seq, seq_len = sample[model.ITEM_SEQ], sample[model.ITEM_SEQ_LEN]  # [1 L], [1]
    pass1 = model.encode(seq, seq_len)
    latent = model.reason(pass1)
    scores = model.item_scores(model.decode(pass1, latent.thought))[0].float()  # [n_items]
    scores[0] = -np.inf
    n_real = int(seq_len[0])
    history = seq[0, :n_real].tolist()
    if exclude_history:
        scores[history] = -np.inf
    candidates = int(torch.isfinite(scores).sum())
    if not 1 <= topk <= candidates:
        raise UserInputError(f"--topk {topk} is invalid: this user can be recommended 1 to {candidates} items.")
    target = int(sample[model.POS_ITEM_ID][0])
    names = item_titles(dataset, getattr(model, "item_text_field", None))
    tokens = dataset.field2id_token[dataset.iid_field]
    top = torch.topk(scores, topk)
    rank = int((scores > scores[target]).sum()) + 1 if torch.isfinite(scores[target]) else None
    return {
        "model": "FLR",
        "dataset": dataset.dataset_name,
        "user_id": str(user_id),
        "exclude_history": bool(exclude_history),
        "history": [{"position": i, "item_id": str(tokens[item]), "title": names[item]} for i, item in
                    enumerate(history)],  # fmt: skip
        "target": {"item_id": str(tokens[target]), "title": names[target], "rank": rank},
        "topk": [
            {"rank": r + 1, "item_id": str(tokens[item]), "title": names[item], "score": float(score),
             "in_history": item in history}
            for r, (score, item) in enumerate(zip(top.values.tolist(), top.indices.tolist()))
        ],  # fmt: skip
        "factors": [
            {"factor": k + 1, "gate": float(latent.gates[0, k]), "attention": latent.attention[0, k].tolist()}
            for k in range(latent.gates.size(1))
        ],
        "all_gates": latent.all_gates[0].tolist(),
    }


def plot_user(explanation, path, max_history=20):
    r"""A PNG: the heatmap of each factor's attention over the recent history (rows: items, oldest at the top;
    columns: factors with their gate weights) beside the top-k list with each item's score.

    The colour is the attention minus the uniform share (``1/n`` per item, ``m/n`` for the row of ``m`` older items
    summed), on a diverging scale symmetric around 0 that is set by the largest deviation: after a short training the
    attention is nearly uniform, and a scale from 0 would paint every cell alike. Each cell prints the attention itself.

    Args:
        explanation (dict): from :func:`explain_user`.
        path (str): PNG file to write.
        max_history (int): most recent history items shown; the attention on older ones is summed into one row.

    Returns:
        dict: what was drawn: ``colour`` (the deviation matrix [rows, K]), ``vmax`` (its colour scale is
        [-vmax, vmax]), ``colour_label`` and ``bar_labels`` (the numbers printed on the score bars).
    """
    plt = _pyplot()
    history = explanation["history"]
    n_real, factors = len(history), explanation["factors"]
    att = np.array([f["attention"][:n_real] for f in factors]).T  # [n_real K]
    uniform = np.full((n_real, 1), 1.0 / max(n_real, 1))  # [n_real 1]
    labels = [shorten(h["title"], 38) for h in history]
    if n_real > max_history:
        older = att[: n_real - max_history].sum(0, keepdims=True)
        att = np.concatenate([older, att[n_real - max_history:]])
        uniform = np.concatenate([uniform[: n_real - max_history].sum(0, keepdims=True),
                                  uniform[n_real - max_history:]])  # fmt: skip
        labels = [f"({n_real - max_history} older items, summed)"] + labels[n_real - max_history:]
    n_rows, k = att.shape
    deviation = att - uniform  # [rows K]
    vmax = float(max(np.abs(deviation).max(), 1e-6))
    colour_label = f"attention minus uniform (1/{n_real} per item): red above, blue below"
    fig_height = max(4.0, 0.32 * n_rows + 1.8)
    fig, (ax, ax_top) = plt.subplots(
        1, 2, figsize=(7.5 + 0.55 * k + 4.5, fig_height), gridspec_kw={"width_ratios": [2.2 + 0.5 * k, 4.2]}
    )
    image = ax.imshow(deviation, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_yticks(range(n_rows), [f"{label}" for label in labels], fontsize=8)
    ax.set_xticks(range(k), [f"factor {f['factor']}\ngate {f['gate']:.2f}" for f in factors], fontsize=8)
    ax.xaxis.tick_top()
    for (r, c), value in np.ndenumerate(att):
        ax.text(c, r, f"{value:.3f}" if value < 0.1 else f"{value:.2f}", ha="center", va="center", fontsize=6,
                color="white" if abs(deviation[r, c]) > 0.6 * vmax else "black")  # fmt: skip
    ax.set_ylabel("history, oldest at the top → most recent at the bottom", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).set_label(colour_label, fontsize=7)

    top = explanation["topk"]
    target = explanation["target"]
    y = np.arange(len(top))[::-1]
    scores = np.array([t["score"] for t in top])
    colors = ["tab:orange" if t["item_id"] == target["item_id"] else "tab:gray" for t in top]
    bars = ax_top.barh(y, scores - scores.min() + 0.05 * (np.ptp(scores) or 1.0), color=colors)
    bar_labels = [f"{score:.3f}" for score in scores]
    ax_top.bar_label(bars, labels=bar_labels, padding=2, fontsize=7)
    ax_top.set_yticks(y, [f"{t['rank']}. {shorten(t['title'], 40)}" + (" (in history)" if t["in_history"] else "")
                          for t in top], fontsize=8)  # fmt: skip
    ax_top.set_xticks([])
    ax_top.set_xlabel("score (bar: above the lowest shown; number: the score)", fontsize=8)
    ax_top.set_title(f"top-{len(top)} recommendations", fontsize=10)
    for side in ("top", "right", "bottom"):
        ax_top.spines[side].set_visible(False)
    rank = target["rank"]
    fig.suptitle(
        f"FLR on {explanation['dataset']}, user {explanation['user_id']}: {n_real} history items, "
        f"held-out next item \"{shorten(target['title'], 40)}\" ranked {rank if rank else 'excluded'}"
        + (" (orange)" if rank and rank <= len(top) else ""),
        fontsize=10,
    )
    _save_quietly(fig, path)
    plt.close(fig)
    return {"colour": deviation, "vmax": vmax, "colour_label": colour_label, "bar_labels": bar_labels}


def _save_quietly(fig, path):
    r"""``tight_layout`` and ``savefig`` with the installed fonts that cover the text (CJK, emoji) as fallbacks;
    characters that no font has show as boxes, with one log line instead of matplotlib's warning per glyph."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    missing = [w for w in caught if "missing from font" in str(w.message) or "Glyph" in str(w.message)]
    for other in (w for w in caught if w not in missing):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if missing:
        logging.getLogger(__name__).info(
            f"{path}: {len(missing)} characters of the titles are in none of the installed fonts and show as boxes "
            "(install a font that has them, e.g. Noto Sans CJK or Noto Color Emoji)."
        )


# Fonts that cover scripts DejaVu Sans lacks, used as fallbacks when installed (matplotlib >= 3.6 falls back per glyph)
FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK", "WenQuanYi Zen Hei", "Droid Sans Fallback",
                  "Source Han Sans", "AR PL UMing CN", "Noto Color Emoji", "Noto Emoji", "Symbola")  # fmt: skip


# --- the whole test set ----------------------------------------------------------------------------------------------


def item_feature(config, dataset, feature):
    r"""The values of an item feature for every internal item id, as a row-normalised matrix.

    Read from the loaded dataset when the field is there, else from the ``.item`` atomic file (the model's
    ``load_col`` usually leaves genres out).

    Args:
        config (Config): the model's config (``data_path``, ``dataset``).
        dataset (Dataset): the loaded dataset.
        feature (str): an item field, token or token_seq (e.g. ``genre`` for ml-1m, ``class`` for ml-100k).

    Returns:
        tuple: (values: list of str, matrix [n_items, V] float with rows summing to 1, or 0 for items without one)
    """
    import pandas as pd

    tokens = dataset.field2id_token[dataset.iid_field]
    path = os.path.join(config["data_path"], f"{config['dataset']}.item")
    if not os.path.isfile(path):
        raise UserFileNotFoundError(f"--feature {feature} needs the item file {path}, which does not exist.")
    read = {"sep": config["field_separator"], "quoting": csv.QUOTE_NONE, "encoding": config["encoding"] or "utf-8"}
    header = pd.read_csv(path, nrows=0, **read).columns
    fields = {column.split(":")[0]: column for column in header}
    if feature not in fields:
        raise UserInputError(f"--feature {feature} is not a column of {path}; columns: {sorted(fields)}.")
    iid = fields[dataset.iid_field]
    frame = pd.read_csv(path, usecols=[iid, fields[feature]], dtype=str, **read)
    frame = frame.fillna("")
    separator = config["seq_separator"] if fields[feature].endswith("token_seq") else None
    per_item = {}
    for item, cell in zip(frame[iid], frame[fields[feature]]):
        per_item[item] = [v for v in (cell.split(separator) if separator else [cell]) if v]
    values = sorted({v for vs in per_item.values() for v in vs})
    index = {v: j for j, v in enumerate(values)}
    matrix = np.zeros((len(tokens), len(values)), dtype=np.float64)
    for i, token in enumerate(tokens):
        item_values = per_item.get(str(token), [])
        for v in item_values:
            matrix[i, index[v]] += 1.0 / len(item_values)
    return values, matrix


@torch.no_grad()
def summarise(model, test_data, feature=None):
    r"""What each factor does over every test history.

    Args:
        model (FLR): trained model, in eval mode.
        test_data (FullSortEvalDataLoader): RecBole's test dataloader.
        feature (tuple, optional): (values, matrix [n_items, V]) from :func:`item_feature`.

    Returns:
        dict: per factor ``gate`` (mean), ``entropy`` (mean normalised attention entropy; 0 = one item, 1 =
        uniform), ``distance_from_last`` (attention-weighted mean number of items between the attended item and the
        most recent one); K x K ``attention_overlap`` (mean shared attention mass, sum_l min(a_k, a_l)),
        ``attention_cosine`` (mean cosine of the attention maps, what L_div penalises) and ``factor_cosine`` (mean
        cosine of the factor vectors); with a feature, per factor its attention-weighted ``distribution`` over the
        values and the ``lift`` against the plain history distribution.
    """
    k = model.n_factors
    sums = {name: torch.zeros(k, k, dtype=torch.float64) for name in ("overlap", "att_cos", "fac_cos")}
    gates, entropy, distance = (torch.zeros(k, dtype=torch.float64) for _ in range(3))
    n_users = 0
    if feature is not None:
        feature_matrix = torch.as_tensor(feature[1], device=model.device)
        by_factor = torch.zeros(k, feature_matrix.size(1), dtype=torch.float64, device=model.device)
        base = torch.zeros(feature_matrix.size(1), dtype=torch.float64, device=model.device)
    for batch in test_data:
        interaction = batch[0].to(model.device)
        seq, seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
        latent = model.reason(model.encode(seq, seq_len))
        att = latent.attention.double()  # [B K L]
        unit_att = torch.nn.functional.normalize(att, dim=-1)
        unit_fac = torch.nn.functional.normalize(latent.factors.double(), dim=-1)
        sums["overlap"] += torch.minimum(att[:, :, None], att[:, None]).sum(-1).sum(0).cpu()  # [K K]
        sums["att_cos"] += (unit_att @ unit_att.transpose(1, 2)).sum(0).cpu()
        sums["fac_cos"] += (unit_fac @ unit_fac.transpose(1, 2)).sum(0).cpu()
        gates += latent.gates.double().sum(0).cpu()
        n_real = seq_len.double()
        ent = -(att * att.clamp_min(1e-12).log()).sum(-1) / n_real.clamp_min(2).log()[:, None]  # [B K]
        entropy += torch.where(n_real[:, None] > 1, ent, torch.zeros_like(ent)).sum(0).cpu()
        back = (seq_len[:, None] - 1 - torch.arange(seq.size(1), device=seq.device)[None]).clamp_min(0)  # [B L]
        distance += (att * back[:, None].double()).sum(-1).sum(0).cpu()
        if feature is not None:
            item_values = feature_matrix[seq]  # [B L V]
            by_factor += torch.einsum("bkl,blv->kv", att, item_values)
            base += (item_values * (latent.mask[..., None] / n_real[:, None, None])).sum((0, 1))
        n_users += seq.size(0)

    def matrix(name):
        return (sums[name] / n_users).tolist()

    off = ~torch.eye(k, dtype=torch.bool)
    result = {
        "n_histories": n_users,
        "n_factors": k,
        "lambda": {"orth": model.lambda_orth, "div": model.lambda_div, "sparse": model.lambda_sparse},
        "gate": (gates / n_users).tolist(),
        "entropy": (entropy / n_users).tolist(),
        "distance_from_last": (distance / n_users).tolist(),
        "attention_overlap": matrix("overlap"),
        "attention_cosine": matrix("att_cos"),
        "factor_cosine": matrix("fac_cos"),
        "mean_pairwise": {
            "attention_overlap": float((sums["overlap"] / n_users)[off].mean()) if k > 1 else None,
            "attention_cosine": float((sums["att_cos"] / n_users)[off].mean()) if k > 1 else None,
            "factor_cosine": float((sums["fac_cos"] / n_users)[off].mean()) if k > 1 else None,
        },
    }
    if feature is not None:
        share = by_factor / by_factor.sum(-1, keepdim=True).clamp_min(1e-12)  # [K V]
        base_share = base / base.sum().clamp_min(1e-12)
        result["feature"] = {
            "values": list(feature[0]),
            "history_distribution": base_share.tolist(),
            "distribution": share.tolist(),
            "lift": (share / base_share.clamp_min(1e-12)).tolist(),
        }
    return result


def plot_summary(summaries, path, title=""):
    r"""A PNG, one row per model: shared attention mass between factors, cosine of the factor vectors, and (with a
    feature) each factor's over- or under-representation of each value against the histories.

    Args:
        summaries (dict): label -> :func:`summarise` result.
        path (str): PNG file to write.
        title (str): figure title.
    """
    plt = _pyplot()
    from matplotlib.colors import TwoSlopeNorm

    has_feature = all("feature" in s for s in summaries.values())
    n_cols = 3 if has_feature else 2
    k_max = max(s["n_factors"] for s in summaries.values())
    n_values = len(next(iter(summaries.values()))["feature"]["values"]) if has_feature else 0
    row_height = max(3.2, 0.26 * n_values + 1.2) if has_feature else 3.2
    fig, axes = plt.subplots(
        len(summaries), n_cols, figsize=(4.2 + 3.2 + (2.6 + 0.6 * k_max if has_feature else 0), row_height *
                                         len(summaries) + 0.8),
        squeeze=False, gridspec_kw={"width_ratios": [1, 1] + ([1.1 + 0.1 * k_max] if has_feature else [])},
    )  # fmt: skip
    for row, (label, summary) in enumerate(summaries.items()):
        k = summary["n_factors"]
        names = [f"F{i + 1}" for i in range(k)]
        pairs = summary["mean_pairwise"]
        for col, (key, cmap, vmin, what, mean) in enumerate([
            ("attention_overlap", "Oranges", 0.0, "shared attention mass", pairs["attention_overlap"]),
            ("factor_cosine", "RdBu_r", -1.0, "cosine of factor vectors", pairs["factor_cosine"]),
        ]):  # fmt: skip
            ax = axes[row, col]
            values = np.array(summary[key])
            ax.imshow(values, cmap=cmap, vmin=vmin, vmax=1.0)
            ax.set_xticks(range(k), names, fontsize=8)
            ax.set_yticks(range(k), names, fontsize=8)
            for (r, c), value in np.ndenumerate(values):
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(value) > 0.7 else "black")  # fmt: skip
            mean_text = f"mean off-diagonal {mean:.2f}" if mean is not None else "one factor"
            ax.set_title(f"{what}\n{mean_text}", fontsize=9)
            if col == 0:
                ax.set_ylabel("\n".join(textwrap.wrap(label, 30)), fontsize=9, fontweight="bold")
        if has_feature:
            ax = axes[row, 2]
            feature = summary["feature"]
            shown = [j for j, share in enumerate(feature["history_distribution"]) if share >= MIN_SHARE]
            lift = np.log2(np.clip(np.array(feature["lift"]).T[shown], 1e-3, None))  # [V K]
            bound = np.log2(3.0)  # one fixed scale for every model, so rows compare; beyond 3x saturates
            ax.imshow(lift, aspect="auto", cmap="PuOr_r", norm=TwoSlopeNorm(0.0, -bound, bound))
            ax.set_yticks(range(len(shown)), [shorten(feature["values"][j], 18) for j in shown], fontsize=7)
            gates = summary["gate"]
            ax.set_xticks(range(k), [f"F{i + 1}\ngate {g:.2f}" for i, g in enumerate(gates)], fontsize=7)
            for (r, c), value in np.ndenumerate(lift):
                if abs(value) >= 0.25:
                    ax.text(c, r, f"{2 ** value:.1f}×", ha="center", va="center", fontsize=6,
                            color="white" if abs(value) > 0.6 * bound else "black")  # fmt: skip
            ax.set_title("attention share / share in the histories\n(orange: more, purple: less; blank: within "
                         "±19%)", fontsize=9)  # fmt: skip
    fig.suptitle(title, fontsize=10)
    _save_quietly(fig, path)
    plt.close(fig)


def _fmt(value):
    if value is None:
        return "n/a"
    return "[" + " ".join(f"{v:.2f}" for v in value) + "]" if isinstance(value, list) else f"{value:.3f}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    fallbacks = [name for name in FALLBACK_FONTS if name in installed]
    if fallbacks:
        families = list(matplotlib.rcParams["font.family"])
        matplotlib.rcParams["font.family"] = families + [name for name in fallbacks if name not in families]
    return plt


# --- command line ----------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m recbole_flr.explain", description=__doc__.split("###\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
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
    args = parser.parse_args(argv)
    if not args.summary and args.user_id is None:
        parser.error("give --user_id for one user, or --summary for the whole test set")
    if args.compare and not args.summary:
        parser.error("--compare needs --summary")
    return args


def run(args):
    r"""Do what ``args`` ask; return the paths written."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # load_data_and_model logs the whole config at INFO
    try:
        return _run(args)
    finally:
        logging.disable(previous)


def _run(args):
    if args.user_id is not None and not args.summary:
        _, model, dataset, _, _, test_data = load_flr(args.model_file)
        explanation = explain_user(model, dataset, test_data, args.user_id, args.topk, args.exclude_history)
        png = args.output or f"explain-{dataset.dataset_name}-user{args.user_id}.png"
        out_json = args.json or os.path.splitext(png)[0] + ".json"
        plot_user(explanation, png, args.max_history)
        with open(out_json, "w") as f:
            json.dump(explanation, f, indent=2, ensure_ascii=False)
        return [png, out_json]
    summaries, files = {}, [(args.model_file, "A")] + ([(args.compare, "B")] if args.compare else [])
    dataset_name = None
    for model_file, tag in files:
        config, model, dataset, _, _, test_data = load_flr(model_file)
        feature = item_feature(config, dataset, args.feature) if args.feature else None
        summary = summarise(model, test_data, feature)
        summary["model_file"] = model_file
        lambdas = summary["lambda"]
        off = not any(lambdas.values())
        label = ("regularisers off" if off else
                 f"regularisers on: λ orth {lambdas['orth']:g}, div {lambdas['div']:g}, sparse {lambdas['sparse']:g}")
        label = label if label not in summaries else f"{label} ({tag})"
        summaries[label] = summary
        dataset_name = dataset.dataset_name
    os.makedirs(args.output_dir, exist_ok=True)
    stem = os.path.join(args.output_dir, args.name or f"factors-{dataset_name}")
    title = f"FLR factors over the {dataset_name} test histories" + (f", profiled by '{args.feature}'" if
                                                                      args.feature else "")  # fmt: skip
    for label, summary in summaries.items():
        pairs = summary["mean_pairwise"]
        print(f"{label}: gates {_fmt(summary['gate'])}, attention entropy {_fmt(summary['entropy'])}, mean pairwise "
              f"shared attention {_fmt(pairs['attention_overlap'])}, attention cosine "
              f"{_fmt(pairs['attention_cosine'])}, factor cosine {_fmt(pairs['factor_cosine'])}")  # fmt: skip
    plot_summary(summaries, stem + ".png", title)
    with open(stem + ".json", "w") as f:
        json.dump({"dataset": dataset_name, "feature": args.feature, "models": summaries}, f, indent=2,
                  ensure_ascii=False)  # fmt: skip
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


if __name__ == "__main__":
    main()
