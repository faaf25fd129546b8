"""Data files that RecBole 1.2.1 reads without a word, or ends in a traceback: each is an error naming the file and
the line (through the command line: one message, no traceback), or a warning with the count and the fix; a few
awkward but valid files load as their plain twins do."""

import datetime
import logging
import os
import sys

import pytest
import torch
from conftest import write_tiny_dataset
from test_bad_input import run_cli

SASREC = ["--model=SASRec", "--dataset=tiny", "--gpu_id=", "--state=ERROR", "--epochs=1", "--show_progress=False"]


def tiny(tmp_path, edit_inter=None, edit_item=None):
    r"""The tiny dataset under ``tmp_path/data``, its .inter/.item lines passed through ``edit_*`` (a list of lines,
    header first, edited in place); returns the data_path."""
    path = write_tiny_dataset(str(tmp_path / "data"))
    for suffix, edit in (("inter", edit_inter), ("item", edit_item)):
        if edit is None:
            continue
        with open(os.path.join(path, f"tiny.{suffix}"), encoding="utf-8") as f:
            lines = f.read().splitlines()
        edit(lines)
        with open(os.path.join(path, f"tiny.{suffix}"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return str(tmp_path / "data")


def cli_error(monkeypatch, tmp_path, data_path, *extra):
    r"""The one-line error of run_recbole_flr.py on ``data_path`` (SASRec unless ``extra`` says otherwise)."""
    monkeypatch.chdir(tmp_path)
    overridden = {arg.split("=", 1)[0] for arg in extra}
    base = [arg for arg in SASREC if arg.split("=", 1)[0] not in overridden]
    code, message = run_cli(monkeypatch, *base, f"--data_path={data_path}", *extra)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # RecBole's Config reads sys.argv: not these flags again
    assert code != 0, message
    first, *rest = message.splitlines()
    assert first.startswith("recbole_flr: error: ") and rest == ["(set RECBOLE_FLR_TRACEBACK=1 to see the traceback)"]
    return first


def load(data_path, model="SASRec", **settings):
    r"""RecBole's dataset of ``tiny`` at ``data_path``, through the plugin's checks (no dataloaders, no model)."""
    from recbole_flr import Config
    from recbole_flr.utils import ensure_dataset, load_dataset

    config = Config(model=model, dataset="tiny", config_dict=dict(data_path=data_path, gpu_id="", **settings))
    ensure_dataset(config)
    return load_dataset(config)


def histories(dataset):
    r"""{user token: [item tokens in RecBole's order]} after RecBole's time ordering."""
    inter = dataset.inter_feat
    users = dataset.id2token(dataset.uid_field, inter[dataset.uid_field].to_numpy())
    items = dataset.id2token(dataset.iid_field, inter[dataset.iid_field].to_numpy())
    result = {}
    for user, item in zip(users, items):
        result.setdefault(str(user), []).append(str(item))
    return result


def test_a_token_time_field_is_refused_with_the_fix(monkeypatch, tmp_path):
    def iso_dates_newest_first(lines):
        rows = sorted((row.split("\t") for row in lines[1:]), key=lambda r: (int(r[0]), -int(r[2])))
        day = datetime.date(2020, 1, 1)
        lines[:] = ["user_id:token\titem_id:token\ttimestamp:token"] + [
            f"{u}\t{i}\t{(day + datetime.timedelta(days=int(t))).isoformat()}" for u, i, t in rows
        ]

    message = cli_error(monkeypatch, tmp_path, tiny(tmp_path, edit_inter=iso_dates_newest_first))
    assert "tiny.inter: the time field timestamp is declared :token" in message
    assert "not by time" in message and "declare the column timestamp:float" in message


def test_a_time_that_is_not_a_number_does_not_suggest_token(monkeypatch, tmp_path):
    def iso_date(lines):
        lines[3] = "1\t5\t2020-01-03"

    message = cli_error(monkeypatch, tmp_path, tiny(tmp_path, edit_inter=iso_date))
    assert "tiny.inter, line 4: the time field timestamp is '2020-01-03', not a number" in message
    assert ":token" not in message


@pytest.mark.parametrize("value, what", [("", "is empty"), ("nan", "is 'nan'"), ("inf", "is 'inf'")])
def test_a_missing_or_infinite_time_is_an_error(monkeypatch, tmp_path, value, what):
    def set_time(lines):
        lines[3] = "\t".join(lines[3].split("\t")[:2] + [value])  # RecBole: the mean time, or sorted last

    message = cli_error(monkeypatch, tmp_path, tiny(tmp_path, edit_inter=set_time))
    assert f"tiny.inter, line 4: the time field timestamp {what}" in message


def test_exact_duplicate_interactions_are_counted_in_the_log(tmp_path, caplog):
    def repeat_60_rows(lines):
        lines.extend(lines[1:61])

    with caplog.at_level(logging.WARNING):
        dataset = load(tiny(tmp_path, edit_inter=repeat_60_rows))
    assert dataset.inter_num == 40 * 12 + 60  # kept, as RecBole keeps them
    warning = [r.getMessage() for r in caplog.records if "repeat an earlier one exactly" in r.getMessage()]
    assert len(warning) == 1 and "tiny.inter: 60 interactions" in warning[0] and "rm_dup_inter: first" in warning[0]
    assert "user '1', item '2', timestamp 0" in warning[0]


def test_duplicates_are_counted_beside_a_token_seq_column(tmp_path, caplog):
    def with_tags(lines):
        lines[:] = [lines[0] + "\ttags:token_seq"] + [line + "\tx y" for line in lines[1:]] + lines[1:3]
        lines[-2:] = [line + "\tx y" for line in lines[-2:]]

    load_col = {"inter": ["user_id", "item_id", "timestamp", "tags"]}
    with caplog.at_level(logging.WARNING):
        load(tiny(tmp_path, edit_inter=with_tags), load_col=load_col)
    assert any("tiny.inter: 2 interactions repeat an earlier one" in r.getMessage() for r in caplog.records)


def test_rows_whose_item_the_item_file_lacks_are_counted_in_the_log(tmp_path, caplog):
    def drop_last_10_items(lines):
        del lines[-10:]

    with caplog.at_level(logging.WARNING):
        dataset = load(tiny(tmp_path, edit_item=drop_last_10_items), model="FLR")
    assert dataset.inter_num == 480 - 44
    warning = [r.getMessage() for r in caplog.records if "does not list" in r.getMessage()]
    assert len(warning) == 1
    assert "tiny.inter: 44 of 480 rows (9.2 %) name an item that tiny.item does not list (10 distinct" in warning[0]
    assert "filter_inter_by_user_or_item: False" in warning[0]


def test_an_empty_item_id_is_left_to_recboles_own_warning(tmp_path, caplog):
    def empty_item_on_line_5(lines):
        lines[4] = "\t".join([lines[4].split("\t")[0], "", "3"])

    with caplog.at_level(logging.WARNING):
        dataset = load(tiny(tmp_path, edit_inter=empty_item_on_line_5), model="FLR")
    assert dataset.inter_num == 479
    messages = [r.getMessage() for r in caplog.records]
    assert any("line [5], item_id do not exist" in m for m in messages)  # RecBole's
    assert not any("does not list" in m for m in messages)


def test_users_that_lose_every_interaction_are_named(tmp_path, caplog):
    def drop_last_10_items(lines):
        del lines[-10:]

    def user_1_on_unlisted_items(lines):
        lines[1:13] = [f"1\t{51 + k % 10}\t{k}" for k in range(12)]

    with caplog.at_level(logging.WARNING):
        dataset = load(tiny(tmp_path, edit_inter=user_1_on_unlisted_items, edit_item=drop_last_10_items), model="FLR")
    assert "1" not in set(dataset.field2id_token["user_id"])
    warning = [r.getMessage() for r in caplog.records if "does not list" in r.getMessage()]
    assert len(warning) == 1 and "and 1 users lose every interaction (e.g. '1')" in warning[0]


def test_a_line_break_inside_a_title_is_an_error(monkeypatch, tmp_path):
    def break_line_6(lines):
        lines[5] += " part\nrest of the title"  # the rest would become an item 'rest of the title'

    message = cli_error(monkeypatch, tmp_path, tiny(tmp_path, edit_item=break_line_6), "--model=FLR")
    assert "tiny.item, line 7: 1 fields where the header has 2" in message and "line break" in message


def test_an_item_file_without_titles_is_logged(tmp_path, caplog):
    def ids_only(lines):
        lines[:] = [line.split("\t")[0] for line in lines]

    from recbole_flr import prepare

    with caplog.at_level(logging.WARNING):
        _, model, *_ = prepare(
            "FLR",
            "tiny",
            config_dict={"data_path": tiny(tmp_path, edit_item=ids_only), "gpu_id": "", "hidden_size": 16},
        )
    assert model.item_text_field is None
    warning = [r.getMessage() for r in caplog.records if "found no title column" in r.getMessage()]
    assert len(warning) == 1 and "tiny.item" in warning[0] and "ids only" in warning[0]


def test_a_title_declared_token_is_read_as_its_words(tmp_path, monkeypatch):
    from recbole_flr import prepare
    from recbole_flr.model.item_text import title_word_ids

    monkeypatch.chdir(tmp_path)
    settings = {"gpu_id": "", "hidden_size": 16, "inner_size": 32, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 10}
    _, _, as_seq, *_ = prepare("FLR", "tiny", config_dict=dict(settings, data_path=tiny(tmp_path / "seq")))

    def declare_token(lines):
        lines[0] = "item_id:token\ttitle:token"

    _, model, as_token, train_data, *_ = prepare(
        "FLR", "tiny", config_dict=dict(settings, data_path=tiny(tmp_path / "token", edit_item=declare_token))
    )
    assert model.item_text_field == "title"
    ids, n_words = title_word_ids(as_token, "title")
    seq_row = {str(token): row for token, row in zip(as_seq.field2id_token["item_id"], as_seq.item_feat["title"])}
    word_of_id = {}
    for item in range(1, as_token.item_num):
        row = seq_row[str(as_token.id2token("item_id", item))]
        words = [str(w) for w in as_seq.field2id_token["title"][row[row > 0].numpy()]]  # the token_seq reading
        word_ids = ids[item][ids[item] > 0].tolist()
        assert len(word_ids) == len(words)
        for word_id, word in zip(word_ids, words):
            assert word_of_id.setdefault(word_id, word) == word  # one word per id
    assert len(set(word_of_id.values())) == len(word_of_id) == n_words - 1 == len(as_seq.field2id_token["title"]) - 1
    assert model.item_title_ids.shape == ids.shape
    loss = model.calculate_loss(next(iter(train_data)).to(model.device))
    assert torch.isfinite(loss[0] if isinstance(loss, tuple) else loss)


@pytest.mark.parametrize(
    "header, expected",
    [
        ("user_id\titem_id\ttimestamp", "the header's column 'user_id' has no type"),
        ("user_id:token\titem_id:token\ttimestamp:flaot", "column 'timestamp:flaot' has the type 'flaot'"),
        ("user_id:token,item_id:token,timestamp:float", "the file looks ','-separated: set field_separator: ','"),
        ("user_id:token\titem_id:token\titem_id:token", "names the column 'item_id' twice"),
    ],
)
def test_a_header_recbole_cannot_parse_is_named(monkeypatch, tmp_path, header, expected):
    def set_header(lines):
        lines[0] = header

    message = cli_error(monkeypatch, tmp_path, tiny(tmp_path, edit_inter=set_header))
    assert "tiny.inter: " in message and expected in message


def test_no_user_with_two_interactions_is_an_error(monkeypatch, tmp_path):
    def one_each(lines):
        lines[1:] = [f"{user}\t{user}\t0" for user in range(1, 30)]

    message = cli_error(monkeypatch, tmp_path, tiny(tmp_path, edit_inter=one_each))
    assert "tiny.inter: no user has two interactions" in message and "29 users" in message


def test_no_user_with_three_interactions_is_an_error_and_four_a_warning(monkeypatch, tmp_path, caplog):
    def two_each(lines):
        lines[1:] = [f"{user}\t{user + k}\t{k}" for user in range(1, 30) for k in range(2)]

    message = cli_error(monkeypatch, tmp_path, tiny(tmp_path / "two", edit_inter=two_each))
    assert "tiny.inter: no user has three interactions" in message and "the test set would be empty" in message

    def three_each(lines):
        lines[1:] = [f"{user}\t{user + k}\t{k}" for user in range(1, 30) for k in range(3)]

    with caplog.at_level(logging.WARNING):
        load(tiny(tmp_path / "three", edit_inter=three_each))
    warning = [r.getMessage() for r in caplog.records if "no user has four interactions" in r.getMessage()]
    assert len(warning) == 1 and "the valid set is empty" in warning[0]


@pytest.mark.parametrize(
    "item_lines, expected",
    [
        ([], "tiny.item is empty"),
        (["item_id:token\ttitle:token_seq"], "tiny.item has a header but no rows"),
        (["item_id:token\ttitle:token_seq"] + [f"{i}.0\tred" for i in range(1, 61)], "none of its rows names an item"),
    ],
)
def test_an_item_file_that_would_drop_every_interaction_is_an_error(monkeypatch, tmp_path, item_lines, expected):
    def replace(lines):
        lines[:] = item_lines

    path = tiny(tmp_path, edit_item=replace)
    if not item_lines:
        open(os.path.join(path, "tiny", "tiny.item"), "w").close()
    message = cli_error(monkeypatch, tmp_path, path, "--model=FLR")
    assert expected in message


def test_a_byte_the_encoding_cannot_read_is_named(monkeypatch, tmp_path):
    path = write_tiny_dataset(str(tmp_path / "data"))
    with open(os.path.join(path, "tiny.item"), "ab") as f:
        f.write("61\tcaf\u00e9 story\n".encode("latin-1"))
    message = cli_error(monkeypatch, tmp_path, str(tmp_path / "data"), "--model=FLR")
    assert "tiny.item, line 62: the bytes b'\\xe9' are not utf-8 text" in message and "encoding: latin-1" in message


def test_a_byte_order_mark_and_windows_line_ends_load_as_the_plain_file(tmp_path):
    plain = load(tiny(tmp_path / "plain"))
    path = write_tiny_dataset(str(tmp_path / "bom" / "data"))
    with open(os.path.join(path, "tiny.inter"), encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(path, "tiny.inter"), "w", encoding="utf-8", newline="") as f:
        f.write("\ufeff" + text.replace("\n", "\r\n"))
    marked = load(str(tmp_path / "bom" / "data"))
    assert histories(marked) == histories(plain) and marked.inter_num == plain.inter_num


def test_repeated_item_ids_are_counted_in_the_log(tmp_path, caplog):
    def repeat_item_5(lines):
        lines.append("5\tanother title for five")

    with caplog.at_level(logging.WARNING):
        load(tiny(tmp_path, edit_item=repeat_item_5), model="FLR")
    warning = [r.getMessage() for r in caplog.records if "repeat an id listed before" in r.getMessage()]
    assert len(warning) == 1 and "line 62 repeats item_id '5' of line 6" in warning[0]


def test_unix_seconds_order_histories_by_exact_time(tmp_path):
    def unix_seconds_newest_first(lines):
        rows = sorted((row.split("\t") for row in lines[1:]), key=lambda r: (int(r[0]), -int(r[2])))
        lines[1:] = [f"{u}\t{i}\t{1_700_000_000 + 10 * int(t)}" for u, i, t in rows]  # 10 s apart

    in_order = histories(load(tiny(tmp_path / "plain")))
    dataset = load(tiny(tmp_path / "unix", edit_inter=unix_seconds_newest_first))
    # RecBole's float32 copy of 1.7e9 ties times up to 128 s apart: its stable sort would keep the reversed file order
    built = dataset.build()[0]  # RecBole's split: the training samples, each history's targets in order
    seen = {}
    users = built.id2token(built.uid_field, built.inter_feat[built.uid_field].numpy())
    targets = built.id2token(built.iid_field, built.inter_feat[built.iid_field].numpy())
    for user, item in zip(users, targets):
        seen.setdefault(str(user), []).append(str(item))
    assert all(seen[user] == items[1 : len(seen[user]) + 1] for user, items in in_order.items())


def test_a_title_far_longer_than_the_others_is_logged(tmp_path, caplog):
    def long_title(lines):
        lines[3] = "3\t" + " ".join(f"w{k}" for k in range(3000))  # a description pasted as a title

    with caplog.at_level(logging.WARNING):
        load(tiny(tmp_path, edit_item=long_title), model="FLR")
    warning = [r.getMessage() for r in caplog.records if "the longest title" in r.getMessage()]
    assert len(warning) == 1 and "3000 tokens (item_id '3')" in warning[0] and "seq_len: {title: 16}" in warning[0]
