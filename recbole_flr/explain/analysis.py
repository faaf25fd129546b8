"""
recbole_flr.explain.analysis
############################
The facts behind FLR's recommendations, as plain data: one user's history, top-k items and each factor's attention
and gate (:func:`explain_user`); what each factor does over a whole test set (:func:`summarise`), measured with the
model's own regulariser maths (:mod:`recbole_flr.model.latent_reasoning`). Drawing them is :mod:`.plots`.
"""

import csv
import os
from logging import getLogger

import numpy as np
import torch

from recbole_flr.checkpoint import best_checkpoint_file, load_checkpoint
from recbole_flr.errors import CheckpointError, UserFileNotFoundError, UserInputError
from recbole_flr.model.item_text import (
    TEXT_FIELDS,  # noqa: F401  (re-exported by recbole_flr.explain)
    item_texts,
    resolve_text_field,
)
from recbole_flr.model.latent_reasoning import attention_cosine, attention_entropy, factor_cosine


def check_flr_checkpoint(model_file, warn_last=True):
    r"""Refuse a file that is not an FLR checkpoint, without loading the data; warn (RecBole's logger) when it is a
    ``-last.pth``: the weights after the last epoch, not the best checkpoint that the run tested.

    Returns:
        bool: whether ``model_file`` is a ``-last.pth`` state.
    """
    checkpoint = load_checkpoint(model_file)
    model_name = checkpoint["config"].get("model") if isinstance(checkpoint["config"], dict) else None
    if model_name != "FLR":
        raise CheckpointError(
            f"explain needs an FLR checkpoint, but {model_file} holds a {model_name or 'unknown'} model: only FLR has "
            "preference factors, attention and gates to show."
        )
    last = bool(checkpoint.get("last"))
    if last and warn_last:
        best = best_checkpoint_file(str(model_file)) or checkpoint.get("best_model_file")
        getLogger().warning(
            f"{model_file} is a -last.pth state: the weights after the run's last epoch, not necessarily the best "
            f"checkpoint that the run selected on valid and tested ({best}). Explaining the last epoch's weights."
        )
    return last


def load_flr(model_file, data_path=None, warn_last=True):
    r"""``load_data_and_model`` for an FLR checkpoint; any other checkpoint is refused before the data is loaded.

    Args:
        model_file (str): an FLR checkpoint.
        data_path (str, optional): the folder holding the dataset's folder, if not where the run read it.
        warn_last (bool): warn when ``model_file`` is a ``-last.pth`` (:func:`check_flr_checkpoint`).

    Returns:
        tuple: (config, model, dataset, train_data, valid_data, test_data)
    """
    from recbole_flr.quick_start import load_data_and_model

    check_flr_checkpoint(model_file, warn_last)
    return load_data_and_model(model_file, data_path=data_path)


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
    field = text_field or resolve_text_field("auto", dataset)  # the model's own field, else what FLR would read
    if field is None or field not in columns:
        return tokens
    return [title or token for token, title in zip(tokens, item_texts(dataset, [field]))]


def user_index(dataset, test_data, user_id):
    r"""The row of ``user_id`` (an external token) in the test samples; ValueError naming valid ids when absent."""
    uid_field = dataset.uid_field
    test_uids = test_data._dataset.inter_feat[uid_field].numpy()
    examples = ", ".join(str(dataset.id2token(uid_field, int(u))) for u in test_uids[:5])
    token = str(user_id)
    if token not in dataset.field2token_id[uid_field]:
        raise UserInputError(
            f"user id '{token}' is not in dataset '{dataset.dataset_name}' (valid ids look like: {examples}, ...)."
        )
    rows = np.flatnonzero(test_uids == dataset.token2id(uid_field, token))
    if rows.size == 0:
        raise UserInputError(
            f"user id '{token}' has no test sample in dataset '{dataset.dataset_name}' (too short a "
            f"history for the split); users with one look like: {examples}, ..."
        )
    return int(rows[-1])


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
        "history": [
            {"position": i, "item_id": str(tokens[item]), "title": names[item]} for i, item in enumerate(history)
        ],
        "target": {"item_id": str(tokens[target]), "title": names[target], "rank": rank},
        "topk": [
            {
                "rank": r + 1,
                "item_id": str(tokens[item]),
                "title": names[item],
                "score": float(score),
                "in_history": item in history,
            }
            for r, (score, item) in enumerate(zip(top.values.tolist(), top.indices.tolist()))
        ],
        "factors": [
            {"factor": k + 1, "gate": float(latent.gates[0, k]), "attention": latent.attention[0, k].tolist()}
            for k in range(latent.gates.size(1))
        ],
        "all_gates": latent.all_gates[0].tolist(),
    }


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
        sums["overlap"] += torch.minimum(att[:, :, None], att[:, None]).sum(-1).sum(0).cpu()  # [K K]
        sums["att_cos"] += attention_cosine(att).sum(0).cpu()  # what L_div penalises
        sums["fac_cos"] += factor_cosine(latent.factors.double()).sum(0).cpu()  # L_orth: its square
        gates += latent.gates.double().sum(0).cpu()
        n_real = seq_len.double()
        entropy += attention_entropy(att, latent.mask).sum(0).cpu()  # L_sparse: its mean
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
