r"""
recbole_flr.data_checks
#######################
Checks of a dataset's atomic files for what RecBole 1.2.1 reads without a word, or ends in a traceback.

:func:`check_atomic_files` runs before RecBole reads the files (from :func:`recbole_flr.utils.check_interaction_file`):
it reads every file RecBole will load once, line by line, and stops on what cannot be what the user meant (a header
without types, a time field that is not a finite number or not ``:float``, a record broken over two lines, a byte the
encoding cannot read, an ``.item`` file that lists none of the items), naming the file, the line and the fix; it logs a
warning for rows RecBole will drop (an item the ``.item`` file does not list) or ignore (a repeated ``.item`` id).
:func:`check_loaded_dataset` runs on RecBole's dataset (:func:`recbole_flr.utils.load_dataset`), before the split: it
warns of exact duplicate interactions and of titles far longer than the others, refuses a sequential dataset where no
user has the interactions a leave-one-out split needs, and orders the interactions by their exact time (RecBole sorts
float32 copies of the times, which cannot tell unix seconds a minute or two apart).
"""

import math
import os
from logging import getLogger

import numpy as np
from recbole.utils import FeatureSource, FeatureType, ModelType

from recbole_flr.errors import UserInputError

#: the column types of RecBole's atomic files (``recbole.utils.FeatureType``)
TYPES = ("token", "token_seq", "float", "float_seq")
UTF8 = ("utf-8", "utf8")


def loaded_sources(config):
    r"""The atomic files RecBole will read: ``(suffix, path)`` for the ``.inter`` file and, when present and named by
    ``load_col`` (or ``load_col`` is ~), the ``.item`` and ``.user`` files."""
    load_col = config["load_col"]
    sources = []
    for suffix in ("inter", "item", "user"):
        path = os.path.join(config["data_path"], f"{config['dataset']}.{suffix}")
        if not os.path.isfile(path):
            continue
        if suffix != "inter" and isinstance(load_col, dict) and not load_col.get(suffix):
            continue
        sources.append((suffix, path))
    return sources


def check_encoding(config, paths):
    r"""Read a UTF-8 byte-order mark as such: RecBole would take it as part of the first column's name (the user id
    column then "does not exist"). ``encoding`` becomes ``utf-8-sig``, which reads files with or without one."""
    if (config["encoding"] or "utf-8").lower() not in UTF8:
        return
    for path in paths:
        with open(path, "rb") as f:
            if f.read(3) == b"\xef\xbb\xbf":
                config["encoding"] = "utf-8-sig"
                getLogger().info(f"{path} starts with a UTF-8 byte-order mark: the dataset is read as utf-8-sig.")
                return


def check_header(path, header, config):
    r"""Stop on a header RecBole cannot parse or would misread, naming the column and the fix.

    Args:
        path (str): the file.
        header (str): its first line, without the line end.
        config (Config): the run's config (``field_separator``, ``TIME_FIELD``).

    Returns:
        list: ``(name, type)`` of each column.
    """
    separator = config["field_separator"] or "\t"
    columns = header.split(separator)
    if len(columns) == 1 and header.count(":") > 1:
        used = next((s for s in ("\t", ",", ";", "|", " ") if s != separator and s in header), None)
        raise UserInputError(
            f"{path}: the header {header[:80]!r} is one column for the field_separator {separator!r}"
            + (f"; the file looks {used!r}-separated: set field_separator: {used!r}" if used else "")
            + " (RecBole's atomic files are tab-separated by default)."
        )
    names = []
    for column in columns:
        name, colon, kind = column.partition(":")
        if kind not in TYPES:
            problem = "has no type" if not colon else f"has the type {kind!r}, which RecBole does not know"
            raise UserInputError(
                f"{path}: the header's column {column!r} {problem}; each column is name:type with the type one of "
                f"{', '.join(TYPES)} (e.g. user_id:token, item_id:token, timestamp:float, title:token_seq)."
            )
        if name in names:
            raise UserInputError(f"{path}: the header names the column {name!r} twice; rename or remove one.")
        names.append(name)
    if path.endswith(".inter") and config["TIME_FIELD"] in names:
        kind = columns[names.index(config["TIME_FIELD"])].partition(":")[2]
        if kind != "float":
            raise UserInputError(
                f"{path}: the time field {config['TIME_FIELD']} is declared :{kind}; RecBole orders each history by "
                f"it, and a :{kind} column is ordered by the id of each value (its first appearance in the file), not "
                f"by time. Write the times as numbers (e.g. unix seconds, or each interaction's position in its "
                f"user's history) and declare the column {config['TIME_FIELD']}:float."
            )
    return list(zip(names, [column.partition(":")[2] for column in columns]))


def check_atomic_files(config):
    r"""Check every atomic file RecBole will load, before it loads them; see the module's docstring.

    Args:
        config (Config): the run's config.
    """
    if config["benchmark_filename"]:
        return  # pre-split files <dataset>.<part>.inter: RecBole checks each
    sources = dict(loaded_sources(config))
    check_encoding(config, sources.values())
    known = {}
    for suffix, field in (("item", config["ITEM_ID_FIELD"]), ("user", config["USER_ID_FIELD"])):
        if suffix in sources:  # first: the .inter scan counts the rows whose ids they lack
            known[suffix] = (field, check_id_file(sources[suffix], config, field))
    check_inter_file(sources["inter"], config, known if config["filter_inter_by_user_or_item"] is True else {})


def _rows(path, config):
    r"""The column names of an atomic file (its header checked) and an iterator over its records, ``(line number,
    fields)``, that stops on a record whose number of fields is not the header's or on bytes the encoding cannot
    read. Blank lines are skipped, as pandas skips them."""
    separator, encoding = config["field_separator"] or "\t", config["encoding"] or "utf-8"
    f = open(path, encoding=encoding)
    try:
        header = f.readline().rstrip("\n")
    except UnicodeDecodeError as error:
        f.close()
        raise UserInputError(_decode_message(path, encoding, error)) from None
    if not header.strip():
        f.close()
        raise UserInputError(f"{path} is empty: remove it, or write a header line and its rows.")
    names = [name for name, _ in check_header(path, header, config)]

    def records():
        with f:
            try:
                for number, line in enumerate(f, start=2):
                    line = line.rstrip("\n")
                    if not line.strip():
                        continue
                    fields = line.split(separator)
                    if len(fields) != len(names):
                        raise UserInputError(_field_count_message(path, number, len(fields), len(names), separator))
                    yield number, fields
            except UnicodeDecodeError as error:
                raise UserInputError(_decode_message(path, encoding, error)) from None

    return names, records()


def check_id_file(path, config, id_field):
    r"""Read an ``.item``/``.user`` file: stop on an empty one, warn of ids listed twice (RecBole keeps the first).

    Returns:
        set: its ids, as RecBole reads them (strings).
    """
    names, records = _rows(path, config)
    key = names.index(id_field) if id_field in names else None
    seen, repeats = {}, []
    for number, fields in records:
        if key is None:
            continue
        if fields[key] in seen:
            repeats.append((number, seen[fields[key]], fields[key]))
        else:
            seen.setdefault(fields[key], number)
    if key is not None and not seen:
        raise UserInputError(f"{path} has a header but no rows: remove it, or list the {id_field}s (one a line).")
    if repeats:
        number, first, value = repeats[0]
        getLogger().warning(
            f"{path}: {len(repeats)} line(s) repeat an id listed before (e.g. line {number} repeats {id_field} "
            f"{value!r} of line {first}); RecBole keeps the first line of each id and ignores the others."
        )
    return set(seen)


def check_inter_file(path, config, known):
    r"""Read the ``.inter`` file: stop on a time that is not a finite number; warn of rows whose item (user) the
    ``.item`` (``.user``) file lacks, which RecBole drops, and stop if that is every row.

    Args:
        known (dict): ``{"item": (ITEM_ID_FIELD, ids of the .item file)}``, likewise ``"user"``; empty when RecBole
            drops nothing (``filter_inter_by_user_or_item`` off).
    """
    names, records = _rows(path, config)
    time = names.index(config["TIME_FIELD"]) if config["TIME_FIELD"] in names else None
    user = names.index(config["USER_ID_FIELD"]) if config["USER_ID_FIELD"] in names else None
    lookups = [(suffix, names.index(field), ids) for suffix, (field, ids) in known.items() if field in names]
    total, dropped, kept_users, dropped_users = 0, {}, set(), set()
    for number, fields in records:
        total += 1
        if time is not None:
            _check_time(path, number, names[time], fields[time])
        missing = False
        for suffix, index, ids in lookups:
            if fields[index] and fields[index] not in ids:  # an empty id: RecBole drops the row and says so
                dropped.setdefault(suffix, []).append((number, fields[index]))
                missing = True
        if user is not None and lookups:
            (dropped_users if missing else kept_users).add(fields[user])
    for suffix, rows in dropped.items():
        line, value = rows[0]
        if len(rows) == total:
            raise UserInputError(
                f"{path}: none of its rows names {'an item' if suffix == 'item' else 'a user'} that "
                f"{config['dataset']}.{suffix} lists (e.g. {value!r} at line {line}), so RecBole would drop them all; "
                f"the ids of the two files must be written alike (e.g. '1' and '1', not '1.0'). "
                f"Or set filter_inter_by_user_or_item: False."
            )
        lost, article = sorted(dropped_users - kept_users), "an" if suffix == "item" else "a"
        distinct = len(set(v for _, v in rows))
        getLogger().warning(
            f"{path}: {len(rows)} of {total} rows ({100 * len(rows) / max(total, 1):.1f} %) name {article} {suffix} "
            f"that {config['dataset']}.{suffix} does not list ({distinct} distinct, e.g. {value!r} at line {line}); "
            "RecBole drops these rows (filter_inter_by_user_or_item: True)"
            + (f", and {len(lost)} users lose every interaction (e.g. {lost[0]!r})" if lost else "")
            + f". Add the {suffix}s to the .{suffix} file, or set filter_inter_by_user_or_item: False to keep the rows."
        )


def _field_count_message(path, number, found, expected, separator):
    if found < expected:
        cause = (
            "a line break inside a value of the line before (each record must be one line), or fields left out "
            "(write a separator for each empty field)"
        )
    else:
        cause = "a separator inside a value, or extra separators (remove them)"
    return f"{path}, line {number}: {found} fields where the header has {expected} ({separator!r}-separated): {cause}."


def _check_time(path, number, name, value):
    try:
        time = float(value)
    except ValueError:
        time = None
    if time is None or not math.isfinite(time):
        what = "empty" if not value.strip() else f"{value!r}, not a number" if time is None else f"{value!r}"
        raise UserInputError(
            f"{path}, line {number}: the time field {name} is {what}; each interaction needs a finite time (a number "
            "such as unix seconds): RecBole would fill an empty or NaN time with the column's mean and sort an "
            "infinite one last, misplacing the interaction in its user's history."
        )


def _decode_message(path, encoding, error):
    with open(path, "rb") as f:
        data = f.read(error.start + 1)
    number = data.count(b"\n") + 1
    return (
        f"{path}, line {number}: the bytes {error.object[error.start : error.end]!r} are not {encoding} text. "
        f"Save the file as UTF-8, or set encoding: to the file's encoding (e.g. encoding: latin-1)."
    )


def check_loaded_dataset(config, dataset):
    r"""Checks of RecBole's dataset after its filtering, before the split; see the module's docstring.

    Args:
        config (Config): the run's config.
        dataset (Dataset): RecBole's dataset (``inter_feat`` still a DataFrame).
    """
    if config["benchmark_filename"]:
        return
    inter, logger = dataset.inter_feat, getLogger()
    path = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    uid, time = dataset.uid_field, dataset.time_field
    warn_duplicates(dataset, path)
    check_sequence_lengths(config, dataset)
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL and uid in inter:
        check_history_lengths(config, inter[uid].value_counts(), len(inter), path)
    if time in inter and dataset.field2source.get(time) == FeatureSource.INTERACTION:
        order_by_exact_time(dataset, logger)


def warn_duplicates(dataset, path):
    r"""Warn of interactions that repeat an earlier one exactly (every loaded column equal; token_seq and float_seq
    columns aside), with the count, an example and the key that removes them. RecBole keeps them
    (``rm_dup_inter: ~``), and so does the plugin: a repeat can be real (two purchases at a coarse timestamp), and
    every model reads the data as RecBole does."""
    inter, uid, iid, time = dataset.inter_feat, dataset.uid_field, dataset.iid_field, dataset.time_field
    plain = [field for field in inter.columns if not dataset.field2type[field].value.endswith("seq")]  # hashable
    duplicated = inter.duplicated(subset=plain, keep="first")
    if not duplicated.any():
        return
    first = inter[duplicated].iloc[0]
    user, item = (str(dataset.id2token(field, int(first[field]))) for field in (uid, iid))
    getLogger().warning(
        f"{path}: {int(duplicated.sum())} interactions repeat an earlier one exactly (every loaded column but "
        f"sequences equal, e.g. user {user!r}, item {item!r}"
        + (f", {time} {first[time]:g}" if time in inter else "")
        + "). RecBole keeps them, so a user's test item can be the same interaction as its valid item, which "
        "inflates the metrics. Remove them from the file, or set rm_dup_inter: first (which also keeps one "
        "interaction per user and item: a repeat at another time goes too)."
    )


def check_sequence_lengths(config, dataset, longest=256, ratio=10):
    r"""Warn of an item token_seq field (a title) whose longest value is far longer than the others: RecBole pads
    every item's value to the longest, in memory and in every batch (a description pasted as one title, ...)."""
    item = dataset.item_feat
    if item is None:
        return
    for field in item.columns:
        if dataset.field2type.get(field) is not FeatureType.TOKEN_SEQ:
            continue
        lengths = item[field].map(len).to_numpy()
        most, typical = int(lengths.max(initial=0)), float(np.median(lengths)) if len(lengths) else 0.0
        if most > longest and most > ratio * max(typical, 1.0):
            at = str(dataset.id2token(dataset.iid_field, int(item[dataset.iid_field].iloc[int(lengths.argmax())])))
            cut = max(int(4 * typical), 16)
            getLogger().warning(
                f"{config['dataset']}.item: the longest {field} has {most} tokens ({dataset.iid_field} {at!r}), the "
                f"median {typical:g}; every item's {field} is padded to {most} in memory and in each batch. Set "
                f"seq_len: {{{field}: {cut}}} to cut them."
            )


def check_history_lengths(config, counts, n_inter, path):
    r"""A sequential model needs a user with 2 interactions to train on; RecBole's leave-one-out split tests a user's
    last one when it has 3 and validates the one before when it has 4. Without any such user, RecBole stops with a
    sampler's traceback (nothing to train), or runs to ``test result: None`` (nothing to test), or selects no epoch
    (nothing to validate)."""
    most = int(counts.max()) if len(counts) else 0
    where = f"{path}: no user has {{}} interactions (after RecBole's filtering: {n_inter} interactions, "
    where += f"{len(counts)} users)"
    if most < 2:
        raise UserInputError(
            where.format("two") + "; a sequential model learns each user's next item from the earlier ones, so there "
            "is nothing to train on. With a leave-one-out split a user needs 2 interactions to be trained on, 3 to be "
            "tested as well, 4 to be validated too."
        )
    split = config["eval_args"]["split"] if isinstance(config["eval_args"], dict) else None
    mode = split.get("LS") if isinstance(split, dict) else None
    if mode in ("valid_and_test", "test_only") and most < 3:
        raise UserInputError(
            where.format("three") + f"; the leave-one-out split (eval_args split LS: {mode}) tests a user's last "
            "interaction after at least two earlier ones, so the test set would be empty."
        )
    if mode == "valid_and_test" and most < 4:
        getLogger().warning(
            where.format("four") + "; the leave-one-out split validates a user's second-to-last interaction after at "
            "least two earlier ones, so the valid set is empty: no epoch is selected on valid and early stopping "
            "never stops. Users with 4 or more interactions fix it; eval_args split LS: test_only says so."
        )


def order_by_exact_time(dataset, logger):
    r"""Sort the interactions by their exact (float64) time, stably, where RecBole's order would differ.

    RecBole sorts the interactions by a float32 copy of the time (``Interaction.sort``, a stable sort): unix seconds
    (~1.7e9) lose up to 128 s, so a user's interactions close in time tie and keep the file's order, which need not
    be the time order. Sorted here first, those keep their exact order instead. Genuine ties (equal times) keep the
    file's order, as in RecBole; both are counted in the log.
    """
    inter, uid, time = dataset.inter_feat, dataset.uid_field, dataset.time_field
    order = np.argsort(inter[time].to_numpy(dtype=np.float64), kind="stable")
    exact = inter.iloc[order][[uid, time]].reset_index(drop=True)
    tied = exact.duplicated(keep=False).to_numpy()
    rounded = exact.assign(**{time: exact[time].to_numpy().astype(np.float32)}).duplicated(keep=False).to_numpy()
    merged = int((rounded & ~tied).sum())
    if merged:
        dataset.inter_feat = inter.iloc[order].reset_index(drop=True)
        logger.info(
            f"{merged} interactions have times that RecBole's float32 copy of {time} ties with another of the same "
            "user's; they are ordered by their exact time, not by their line in the file."
        )
    if tied.any():
        logger.info(
            f"{int(tied.sum())} interactions share their exact {time} with another of the same user's; they keep "
            "their order in the file."
        )
