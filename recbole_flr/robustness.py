"""
recbole_flr.robustness
######################
How much a trained sequential model's ranking quality falls when the histories it reads at test time are noisy.

Two corruptions of RecBole's ``item_id_list`` / ``item_length`` tensors, both pure functions of their inputs and a
``torch.Generator`` (so a seed reproduces them, and every model sees exactly the same corrupted histories):

- ``replace``: each real history position is replaced, with probability ``rate``, by an item id drawn uniformly
  from ``[1, n_items)`` (it may draw the original item back: the noise is uniform, not adversarial);
- ``drop``: each real history position is removed with probability ``rate``, the remaining items move left in
  their order, the length shrinks, and one item (drawn uniformly among the real ones) is kept when all would go.

Padding stays 0 and the target item (``item_id``) is never touched. :func:`evaluate_corrupted` then runs RecBole's
unchanged ``Trainer.evaluate`` on a full-sort test dataloader over the corrupted copy of the test samples, so the
metrics are RecBole's, computed exactly as for the clean test set (``rate=0`` reproduces it exactly).
"""

import torch
from recbole.data.dataloader import FullSortEvalDataLoader

from recbole_flr.errors import UserInputError
from recbole_flr.trainer import get_trainer

CORRUPTIONS = ("replace", "drop")


def _real_mask(item_seq, item_seq_len):
    positions = torch.arange(item_seq.size(1), device=item_seq.device)[None]
    return positions < item_seq_len[:, None]  # [N L]


def _check(rate, item_seq, item_seq_len):
    if not 0.0 <= float(rate) <= 1.0:
        raise UserInputError(f"rate={rate} is invalid: a corruption rate is a probability in [0, 1].")
    if item_seq.dim() != 2 or item_seq_len.shape != item_seq.shape[:1]:
        raise ValueError(
            f"item_seq must be [N, L] and item_seq_len [N]; got {tuple(item_seq.shape)} and "
            f"{tuple(item_seq_len.shape)}."
        )


def replace_items(item_seq, item_seq_len, rate, n_items, generator=None):
    r"""Replace each real history item, with probability ``rate``, by a uniformly random item id.

    Args:
        item_seq (torch.Tensor): right-padded histories (0 = padding), shape [N, L].
        item_seq_len (torch.Tensor): history lengths, shape [N].
        rate (float): replacement probability per real position, in [0, 1].
        n_items (int): number of item ids including the padding id 0; replacements lie in [1, n_items).
        generator (torch.Generator, optional): source of randomness (CPU).

    Returns:
        tuple: (new item_seq [N, L], item_seq_len unchanged [N]); the inputs are not modified.
    """
    _check(rate, item_seq, item_seq_len)
    real = _real_mask(item_seq, item_seq_len).cpu()
    hit = (torch.rand(item_seq.shape, generator=generator) < rate) & real
    random_items = torch.randint(1, n_items, item_seq.shape, generator=generator)
    new_seq = torch.where(hit.to(item_seq.device), random_items.to(item_seq), item_seq)
    return new_seq, item_seq_len.clone()


def drop_items(item_seq, item_seq_len, rate, generator=None, extra_lists=()):
    r"""Drop each real history item with probability ``rate``, keeping the order of the others and at least one.

    Args:
        item_seq (torch.Tensor): right-padded histories (0 = padding), shape [N, L].
        item_seq_len (torch.Tensor): history lengths, shape [N].
        rate (float): drop probability per real position, in [0, 1].
        generator (torch.Generator, optional): source of randomness (CPU).
        extra_lists (tuple): other per-position tensors [N, L] (e.g. ``timestamp_list``) to shift the same way.

    Returns:
        tuple: (new item_seq [N, L], new item_seq_len [N], list of the shifted ``extra_lists``); the kept items are
        left-aligned, padding (0) fills the rest, and the inputs are not modified.
    """
    _check(rate, item_seq, item_seq_len)
    real = _real_mask(item_seq, item_seq_len).cpu()
    keep = (torch.rand(item_seq.shape, generator=generator) >= rate) & real  # [N L]
    # a history that would lose every item keeps one, drawn uniformly among its real positions
    rescue = torch.rand(item_seq.shape, generator=generator).masked_fill(~real, -1.0).argmax(dim=1)  # [N]
    empty = ~keep.any(dim=1) & real.any(dim=1)
    keep[empty, rescue[empty]] = True
    # stable sort puts the kept positions first, in their original order
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices.to(item_seq.device)  # [N L]
    new_len = keep.sum(dim=1).to(item_seq_len)
    new_real = _real_mask(item_seq, new_len)

    def shift(tensor):
        return torch.gather(tensor, 1, order).masked_fill(~new_real, 0)

    return shift(item_seq), new_len, [shift(tensor) for tensor in extra_lists]


def corrupt_interaction(
    interaction,
    kind,
    rate,
    n_items,
    seed,
    item_seq_field="item_id_list",
    item_seq_len_field="item_length",
    list_suffix="_list",
):
    r"""A corrupted copy of RecBole sequential samples (an ``Interaction`` with item_id_list, item_length, ...).

    Args:
        interaction (Interaction): the samples; only the history fields change.
        kind (str): ``'replace'`` or ``'drop'``.
        rate (float): corruption probability per real history position.
        n_items (int): number of item ids including padding.
        seed (int): seed of the generator; the same seed and samples give the same corruption.
        item_seq_field, item_seq_len_field, list_suffix (str): RecBole's field names.

    Returns:
        Interaction: a new interaction; the target item field and every non-history field are shared unchanged.
    """
    if kind not in CORRUPTIONS:
        raise UserInputError(f"corruption kind '{kind}' is invalid: the range is {list(CORRUPTIONS)}.")
    generator = torch.Generator().manual_seed(int(seed))
    fields = dict(interaction.interaction)
    seq, seq_len = fields[item_seq_field], fields[item_seq_len_field]
    if kind == "replace":
        fields[item_seq_field], fields[item_seq_len_field] = replace_items(seq, seq_len, rate, n_items, generator)
    else:
        others = [
            name
            for name in fields
            if name.endswith(list_suffix) and name != item_seq_field and fields[name].shape[:2] == seq.shape
        ]
        new_seq, new_len, shifted = drop_items(seq, seq_len, rate, generator, [fields[n] for n in others])
        fields[item_seq_field], fields[item_seq_len_field] = new_seq, new_len
        fields.update(zip(others, shifted))
    return type(interaction)(fields)


def corrupted_dataloader(eval_data, kind, rate, seed=2020):
    r"""A full-sort evaluation dataloader over a corrupted copy of ``eval_data``'s samples.

    The whole split is corrupted at once with one generator, so the corruption depends on the seed and the samples
    only: not on the batch size, and not on the model (every model of a comparison sees the same histories).

    Args:
        eval_data (FullSortEvalDataLoader): RecBole's valid or test dataloader of a sequential model.
        kind (str): ``'replace'`` or ``'drop'``.
        rate (float): corruption probability per real history position.
        seed (int): corruption seed.

    Returns:
        FullSortEvalDataLoader: same config, sampler and batch size as ``eval_data``.
    """
    if not isinstance(eval_data, FullSortEvalDataLoader) or not eval_data.is_sequential:
        raise ValueError(
            "Robustness evaluation needs the full-sort dataloader of a sequential model (eval_args mode: full)."
        )
    config, dataset = eval_data.config, eval_data._dataset
    inter = corrupt_interaction(
        dataset.inter_feat,
        kind,
        rate,
        dataset.item_num,
        seed,
        item_seq_field=dataset.iid_field + config["LIST_SUFFIX"],
        item_seq_len_field=config["ITEM_LIST_LENGTH_FIELD"],
        list_suffix=config["LIST_SUFFIX"],
    )
    return FullSortEvalDataLoader(config, dataset.copy(inter), eval_data._sampler, shuffle=False)


def evaluate_corrupted(
    config, model, test_data, kinds=CORRUPTIONS, rates=(0.0, 0.1, 0.2, 0.3), seed=2020, trainer=None
):
    r"""RecBole's test metrics of ``model`` on histories corrupted at each rate, for each corruption kind.

    Args:
        config (Config): the model's config (as returned by ``load_data_and_model``).
        model (AbstractRecommender): a trained sequential model.
        test_data (FullSortEvalDataLoader): the clean test dataloader.
        kinds (tuple): corruption kinds.
        rates (tuple): corruption rates.
        seed (int): corruption seed; the same for every kind and rate (a rate-0.2 corruption is not a superset of
            the rate-0.1 one).
        trainer (Trainer, optional): the trainer to evaluate with; by default the model's recbole_flr trainer.

    Returns:
        dict: ``{kind: {rate: OrderedDict of metrics}}``.
    """
    trainer = trainer or get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    results = {}
    for kind in kinds:
        results[kind] = {}
        for rate in rates:
            loader = corrupted_dataloader(test_data, kind, rate, seed)
            results[kind][float(rate)] = trainer.evaluate(loader, load_best_model=False, show_progress=False)
    return results
