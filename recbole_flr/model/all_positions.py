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

:func:`compact_train_data` (called by :func:`recbole_flr.quick_start.run_recbole_flr`) goes further: it gives the
trainer a loader over the kept rows alone, so an epoch no longer collates the skipped rows (on ml-1m, 959,543 of
982,089 rows: 3.65 s of collation per epoch on a 2-core CPU, 0.14 s for the kept ones; the measurement is in the
research log, docs/research_log.md). FLR's GRPO stage trains on the same loader: a GRPO epoch then costs one group of
G samples per kept window instead of one per prefix row (on ml-100k 2,412 rows instead of 97,171).
"""

from logging import getLogger

import torch
from recbole.data.dataloader import TrainDataLoader

from recbole_flr.errors import UserInputError

#: The column :func:`register_training_windows` adds to RecBole's training rows: each row's index in the split, so
#: every batch of a loader over those rows (or over a subset of them) says exactly which rows it holds.
ROW_FIELD = "train_row_index"


def training_window_rows(dataset, max_seq_length):
    r"""Indices of the training rows whose windows tile every user's training targets.

    Args:
        dataset (SequentialDataset): RecBole's training split (``train_data._dataset``).
        max_seq_length (int): the history length L.

    Returns:
        torch.Tensor: int64 row indices into ``dataset.inter_feat``, one per kept row.
    """
    users = dataset.inter_feat[dataset.uid_field].long()
    # RecBole writes each user's prefixes in time order; a stable sort keeps that order within a user
    users_sorted, order = torch.sort(users, stable=True)
    _, counts = torch.unique_consecutive(users_sorted, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank_from_end = torch.repeat_interleave(counts, counts) - 1 - (torch.arange(len(users)) - starts)
    return order[rank_from_end % max_seq_length == 0]


def next_items(item_seq, item_seq_len, target):
    r"""The item after each position of right-padded histories: the next history item, or ``target`` after the
    last real one; shape [B, L] (positions after the history hold 0)."""
    batch = item_seq.size(0)
    following = torch.cat([item_seq[:, 1:], item_seq.new_zeros(batch, 1)], dim=1)
    following[torch.arange(batch, device=item_seq.device), item_seq_len - 1] = target
    return following


def real_positions(item_seq, item_seq_len, target):
    r"""The real positions of right-padded histories, row-major over (b, t), and the item after each.

    Returns:
        tuple: rows [N] and steps [N] (position t of history b), and their next items [N] (:func:`next_items`).
    """
    mask = torch.arange(item_seq.size(1), device=item_seq.device)[None] < item_seq_len[:, None]  # [B L]
    rows, steps = mask.nonzero(as_tuple=True)
    return rows, steps, next_items(item_seq, item_seq_len, target)[rows, steps]


def register_training_windows(model, dataset):
    r"""Mark the training rows ``model`` trains on: ``dataset`` (RecBole's training split, the one its train loader
    reads) gets the column :data:`ROW_FIELD`, each row's index, and ``model`` the buffer ``training_windows`` (bool
    [rows], True for the rows :func:`training_window_rows` keeps), which :func:`all_positions_loss` and
    :func:`compact_train_data` read."""
    feat = dataset.inter_feat
    feat[ROW_FIELD] = torch.arange(len(feat))
    kept = torch.zeros(len(feat), dtype=torch.bool)
    kept[training_window_rows(dataset, model.max_seq_length)] = True
    model.register_buffer("training_windows", kept, persistent=False)
    getLogger().info(
        f"{type(model).__name__} trains all positions: {int(kept.sum())} of {len(feat)} training rows are trained on."
    )


def all_positions_loss(model, interaction):
    r"""The cross-entropy at every real position of the batch's kept windows (the other rows are skipped).

    Args:
        model (SequentialRecommender): with ``training_windows`` (:func:`register_training_windows`), ``loss_fct``
            and ``all_positions_forward(item_seq, item_seq_len, target)`` returning (logits [N, n_items], next items
            [N], and optionally one more output, e.g. FLR's latent output of those positions).
        interaction (Interaction): a training batch of the split the model was built with (it has :data:`ROW_FIELD`).

    Returns:
        tuple: the loss, and the forward's extra output (None without one). With no kept row in the batch, a zero
        loss that still has a graph, and None.
    """
    item_seq, item_seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    target = interaction[model.POS_ITEM_ID]
    if ROW_FIELD not in interaction:
        raise UserInputError(
            f"{type(model).__name__} trains all positions of the training rows it marked when it was built; this batch "
            f"has no '{ROW_FIELD}' column. Build the train loader over the dataset the model was built with "
            "(RecBole's train_data._dataset), or set train_all_positions: False (FLR)."
        )
    keep = model.training_windows[interaction[ROW_FIELD]]
    if not keep.any():
        return model.item_embedding.weight.sum() * 0.0, None
    logits, targets, *extra = model.all_positions_forward(item_seq[keep], item_seq_len[keep], target[keep])
    return model.loss_fct(logits, targets), (extra[0] if extra else None)


class KeptWindowsLoader(TrainDataLoader):
    r"""RecBole's :class:`~recbole.data.dataloader.TrainDataLoader` over the kept windows only, with a batch size
    that keeps the expected number of windows per step (and so the steps per epoch) of the full loader."""

    def __init__(self, config, dataset, sampler, shuffle, batch_size):
        self.windows_per_batch = batch_size
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def _init_batch_size_and_step(self):
        self.step = self.windows_per_batch
        self.set_batch_size(self.windows_per_batch)


def compact_train_data(train_data, model):
    r"""The train loader restricted to the rows ``model`` trains on, when it trains all positions on SFT alone.

    The full loader of ``train_batch_size`` rows holds on average ``train_batch_size * kept / rows`` kept windows;
    the compact loader's batch is that many windows (at least 1), so steps per epoch, windows per step and the
    loss are the same in expectation; only the collation of the skipped rows is saved. A batch of the full loader
    varies around that mean; the compact one does not.

    Args:
        train_data (TrainDataLoader): RecBole's train loader (every prefix row).
        model (torch.nn.Module): the model; compacted only if it trains all positions (it has
            ``training_windows``: SASRecAllPos, or FLR with ``train_all_positions``). FLR's GRPO stage then
            trains on the same rows: each kept window's full prefix (every user's longest training history and one
            every L targets before it), one GRPO sample group per row.

    Returns:
        TrainDataLoader: ``train_data`` itself, or a :class:`KeptWindowsLoader`.
    """
    if getattr(model, "training_windows", None) is None:
        return train_data
    config, dataset = train_data.config, train_data._dataset
    feat = dataset.inter_feat
    index = training_window_rows(dataset, model.max_seq_length)
    batch_size = max(1, round(config["train_batch_size"] * len(index) / len(feat)))
    loader = KeptWindowsLoader(config, dataset.copy(feat[index]), train_data._sampler, train_data.shuffle, batch_size)
    getLogger().info(
        f"Train loader: the {len(index)} kept windows of {len(feat)} rows, {batch_size} per batch "
        f"(train_batch_size {config['train_batch_size']} rows hold that many on average); "
        f"{len(loader)} steps per epoch."
    )
    return loader
