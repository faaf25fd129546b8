"""
recbole_flr.model.all_positions
###############################
Training a causal sequential model on every position of a user's window in one pass (as the original SASRec does)
instead of one forward pass per RecBole prefix sample. Shared by FLR (``train_all_positions``) and
:class:`~recbole_flr.model.sasrec_allpos.SASRecAllPos`.

RecBole's training set holds every prefix of every user (a sliding window of at most L items once a history is
longer). Per user, the rows kept are those whose targets are the last one, L before it, 2L before it, ...: their
windows tile the user's training targets, so the loss at every position of the kept rows covers each target exactly
once, with the window's own prefix as context. The other rows of RecBole's train loader are skipped in the loss.
"""

import torch


def row_keys(users, item_seq, item_seq_len, target):
    r"""A 64-bit hash of (user, window length, target, first item) naming a training row, shape [B]."""
    key = users.long()
    for part in (item_seq_len, target, item_seq[:, 0]):
        key = key * 1_000_003 + part.long()  # int64 wraps around: a collision only adds or drops one window
    return key


def training_window_keys(dataset, max_seq_length):
    r"""Sorted keys (:func:`row_keys`) of the training rows whose windows tile every user's training targets.

    Args:
        dataset (SequentialDataset): RecBole's training split (``train_data._dataset``).
        max_seq_length (int): the history length L.

    Returns:
        torch.Tensor: int64 keys, sorted, one per kept row.
    """
    feat = dataset.inter_feat
    users = feat[dataset.uid_field].long()
    # RecBole writes each user's prefixes in time order; a stable sort keeps that order within a user
    users_sorted, order = torch.sort(users, stable=True)
    _, counts = torch.unique_consecutive(users_sorted, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank_from_end = torch.repeat_interleave(counts, counts) - 1 - (torch.arange(len(users)) - starts)
    kept = order[rank_from_end % max_seq_length == 0]
    seq_field = dataset.iid_field + dataset.config["LIST_SUFFIX"]
    len_field = dataset.config["ITEM_LIST_LENGTH_FIELD"]
    keys = row_keys(users[kept], feat[seq_field][kept], feat[len_field][kept], feat[dataset.iid_field][kept])
    return torch.sort(keys).values


def kept_rows(table, keys):
    r"""Which rows of a batch (their :func:`row_keys`) are kept windows of ``table``, bool [B]."""
    if table.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    return table[torch.searchsorted(table, keys).clamp_max(table.numel() - 1)] == keys


def next_items(item_seq, item_seq_len, target):
    r"""The item after each position of right-padded histories: the next history item, or ``target`` after the
    last real one; shape [B, L] (positions after the history hold 0)."""
    batch = item_seq.size(0)
    following = torch.cat([item_seq[:, 1:], item_seq.new_zeros(batch, 1)], dim=1)
    following[torch.arange(batch, device=item_seq.device), item_seq_len - 1] = target
    return following
