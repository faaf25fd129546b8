"""
recbole_flr.explain.plots
#########################
The PNGs of :mod:`recbole_flr.explain`: one user's attention heatmap beside its top-k list (:func:`plot_user`), and the
factors of whole test sets side by side (:func:`plot_summary`). They draw what :mod:`.analysis` returns.
"""

import logging
import textwrap

import numpy as np

MIN_SHARE = 0.005  # feature values rarer than this in the histories are left out of the plot (noisy ratios)


def shorten(text, width=38):
    r"""``text`` cut to ``width`` characters at a word boundary where possible, with an ellipsis."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if " " in cut[width // 2 :]:  # end at a word boundary unless that loses more than half
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,:;-(/") + "…"


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
        att = np.concatenate([older, att[n_real - max_history :]])
        uniform = np.concatenate(
            [uniform[: n_real - max_history].sum(0, keepdims=True), uniform[n_real - max_history :]]
        )
        labels = [f"({n_real - max_history} older items, summed)"] + labels[n_real - max_history :]
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
        ax.text(
            c,
            r,
            f"{value:.3f}" if value < 0.1 else f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=6,
            color="white" if abs(deviation[r, c]) > 0.6 * vmax else "black",
        )
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
    ax_top.set_yticks(
        y,
        [f"{t['rank']}. {shorten(t['title'], 40)}" + (" (in history)" if t["in_history"] else "") for t in top],
        fontsize=8,
    )
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
        len(summaries),
        n_cols,
        figsize=(4.2 + 3.2 + (2.6 + 0.6 * k_max if has_feature else 0), row_height * len(summaries) + 0.8),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 1] + ([1.1 + 0.1 * k_max] if has_feature else [])},
    )
    for row, (label, summary) in enumerate(summaries.items()):
        k = summary["n_factors"]
        names = [f"F{i + 1}" for i in range(k)]
        pairs = summary["mean_pairwise"]
        for col, (key, cmap, vmin, what, mean) in enumerate(
            [
                ("attention_overlap", "Oranges", 0.0, "shared attention mass", pairs["attention_overlap"]),
                ("factor_cosine", "RdBu_r", -1.0, "cosine of factor vectors", pairs["factor_cosine"]),
            ]
        ):
            ax = axes[row, col]
            values = np.array(summary[key])
            ax.imshow(values, cmap=cmap, vmin=vmin, vmax=1.0)
            ax.set_xticks(range(k), names, fontsize=8)
            ax.set_yticks(range(k), names, fontsize=8)
            for (r, c), value in np.ndenumerate(values):
                ax.text(
                    c,
                    r,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if abs(value) > 0.7 else "black",
                )
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
                    ax.text(
                        c,
                        r,
                        f"{2 ** value:.1f}×",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if abs(value) > 0.6 * bound else "black",
                    )
            ax.set_title(
                "attention share / share in the histories\n(orange: more, purple: less; blank: within ±19%)",
                fontsize=9,
            )
    fig.suptitle(title, fontsize=10)
    _save_quietly(fig, path)
    plt.close(fig)


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
FALLBACK_FONTS = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "Source Han Sans",
    "AR PL UMing CN",
    "Noto Color Emoji",
    "Noto Emoji",
    "Symbola",
)


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
