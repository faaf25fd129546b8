"""
recbole_flr.hyper
#################
Hyper-parameter tuning the RecBole way, for FLR and every RecBole model: RecBole's :class:`HyperTuning` (hyperopt)
drives :func:`objective_function`, which trains, validates and tests one setting through
:func:`recbole_flr.quick_start.run_recbole_flr`. ``run_hyper.py`` is the command line.

The params file is RecBole's: one key a line, ``learning_rate choice [0.001,0.002]``, ``dropout uniform 0.1,0.5``,
``n_layers quniform 1,3,1``, ``learning_rate loguniform -8,0`` (hyperopt's: the bounds are natural logs, here
e^-8 to 1); ``#`` starts a comment.

NOTE:
    Departures from RecBole 1.2.1, each because its version fails or loses work here:

    - its ``objective_function`` reports to ray's ``tune.report`` and fails outside ray; this one returns the same
      dict (plus the time, epochs and checkpoint of the trial) and imports no ray;
    - the params file is checked before any training (:func:`read_params_file`, :func:`check_params`): a bad line is
      one error naming the file and line, where RecBole ``eval``-s the line and fails in the middle of a search;
    - every finished trial is written at once to the result file (:class:`HyperTuning`), and a search restarted
      with the same output file reads its finished trials back instead of training them again (hyperopt's draws are
      seeded, ``search_seed``, so the restarted search asks for the same settings in the same order);
    - ``exhaustive`` with ``max_evals`` tries ``max_evals`` distinct settings of the grid in a seeded random order
      (RecBole's ignores ``max_evals`` and tries the whole grid);
    - a trial that ends in a NaN loss is recorded as failed and the search goes on.
"""

import ast
import itertools
import json
import math
import os
import pathlib
import random
import sys
import time
from dataclasses import dataclass

import yaml
from recbole.trainer import HyperTuning as RecBoleHyperTuning

from recbole_flr.checkpoint import atomic_write, plain_result
from recbole_flr.config import RUN_KEYS, Config, validate
from recbole_flr.errors import NonFiniteLossError, UserFileNotFoundError, UserInputError

PARAM_TYPES = ("choice", "uniform", "quniform", "loguniform")
FAILED_LOSS = 1e9  # what hyperopt's early stop reads of a failed trial (None would reset its best)
HYPER_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "properties", "hyper")
SEARCH_SEED = 2020  # run_hyper.py's --search_seed: the order of an exhaustive search (grid_order), hyperopt's draws


@dataclass
class Param:
    r"""One line of a params file: the key, its hyperopt type, its values (choice) or bounds, and where it was read."""

    name: str
    kind: str
    values: list
    where: str

    def candidates(self):
        r"""The values a trial may give the key: every choice, or the two ends of a range (checked like settings)."""
        if self.kind == "choice":
            return self.values
        low, high = self.values[:2]
        if self.kind == "loguniform":
            return [math.exp(low), math.exp(high)]
        if self.kind == "quniform":
            return [_whole(low), _whole(high)]
        return [low, high]


def shipped_params_file(model):
    r"""``recbole_flr/properties/hyper/<model>.hyper``, the search space of the results pages, or None."""
    path = os.path.join(HYPER_DIR, f"{model}.hyper")
    return path if os.path.isfile(path) else None


def read_params_file(path):
    r"""Read a RecBole params file, refusing a malformed line with an error that names the file and line.

    Returns:
        list[Param]: the keys in file order.
    """
    if not os.path.isfile(path):
        shipped = ", ".join(sorted(os.listdir(HYPER_DIR)))
        raise UserFileNotFoundError(f"Params file {path} does not exist (shipped ones, in {HYPER_DIR}: {shipped}).")
    params, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if not text:
                continue
            where = f"{path}, line {number} ({text!r})"
            parts = text.split(None, 2)
            if len(parts) < 3:
                raise UserInputError(
                    f"{where}: a line is '<key> <type> <values>', e.g. 'learning_rate choice [0.001]'."
                )
            name, kind, rest = parts
            if kind not in PARAM_TYPES:
                raise UserInputError(f"{where}: unknown type '{kind}'; the types are {', '.join(PARAM_TYPES)}.")
            if name in seen:
                raise UserInputError(f"{where}: '{name}' is already searched on line {seen[name]}.")
            if name in RUN_KEYS:
                raise UserInputError(f"{where}: '{name}' says which run this is; it cannot be searched.")
            seen[name] = number
            params.append(Param(name, kind, _read_values(kind, rest, where), where))
    if not params:
        raise UserInputError(
            f"Params file {path} names no key to search (lines such as 'learning_rate choice [0.001]')."
        )
    return params


def _read_values(kind, text, where):
    if kind == "choice":
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values = None
        if not isinstance(values, (list, tuple)) or not values:
            raise UserInputError(f"{where}: 'choice' takes a non-empty Python list, e.g. [0.001, 0.002] or ['a', 'b'].")
        values = [list(value) if isinstance(value, tuple) else value for value in values]
        repeated = [value for i, value in enumerate(values) if value in values[:i]]
        if repeated:
            raise UserInputError(f"{where}: {repeated[0]!r} is listed twice.")
        return values
    fields = [field.strip() for field in text.split(",")]
    count, form = (3, "low,high,q") if kind == "quniform" else (2, "low,high")
    try:
        numbers = [float(field) for field in fields]
    except ValueError:
        numbers = []
    if len(numbers) != count or not all(math.isfinite(number) for number in numbers):
        raise UserInputError(f"{where}: '{kind}' takes {count} numbers, {form}.")
    if numbers[0] >= numbers[1]:
        raise UserInputError(f"{where}: the low end {numbers[0]:g} must be below the high end {numbers[1]:g}.")
    if kind == "quniform" and numbers[2] <= 0:
        raise UserInputError(f"{where}: the step q must be positive, not {numbers[2]:g}.")
    return numbers


def _whole(value):
    r"""hyperopt's ``quniform`` draws floats (2.0); an integer key needs 2."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def check_params(params, model, dataset, config_file_list=None, fixed=None):
    r"""Check every value a trial may set before any training, as the run itself checks a setting (unknown keys,
    documented types and ranges, another model's key): each choice and both ends of each range, one at a time.

    Args:
        params (list[Param]): from :func:`read_params_file`.
        model (str), dataset (str): the run's.
        config_file_list (list, optional): the fixed YAML files.
        fixed (dict, optional): the fixed ``--key=value`` settings of the command line.
    """
    for param in params:
        if param.name in (fixed or {}):
            raise UserInputError(
                f"{param.where}: '{param.name}' is also set on the command line (--{param.name}=...), which would "
                "override every trial's value; set it in one place."
            )
        for value in param.candidates():
            try:
                validate(
                    Config(
                        model=model, dataset=dataset, config_file_list=config_file_list, config_dict={param.name: value}
                    )
                )
            except UserInputError as error:
                raise UserInputError(f"{param.where}: {param.name}={value!r} is not a valid setting: {error}") from None


def objective_function(config_dict=None, config_file_list=None, saved=True):
    r"""Train, validate and test one setting: RecBole's objective function (the signature :class:`HyperTuning` calls),
    through the plugin's run function, without ray.

    Args:
        config_dict (dict, optional): the trial's settings (with ``model`` and ``dataset`` unless the files or the
            command line give them).
        config_file_list (list, optional): the fixed YAML files.
        saved (bool): save the best model and test it (as ``run_recbole_flr``).

    Returns:
        dict: RecBole's keys (``model``, ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``,
        ``test_result``, the results as plain floats) plus ``seconds`` (the whole trial), ``epochs`` (validated, every
        stage: FLR's SFT then GRPO), ``best_epoch`` (which of them gave the tested weights, from 1; the run's own
        result file numbers epochs as its log does, from 0), ``train_s_per_epoch``, and the run's
        ``saved_model_file``, ``result_file`` and ``log_file``.
    """
    from recbole_flr.quick_start import run_recbole_flr

    seen = {"model": None, "valid": [], "train_s": []}

    def listen(event, info):
        if event == "prepared":
            seen["model"] = info["trainer"].config["model"]
        elif event == "train_epoch":
            seen["train_s"].append(info["train_s"])
        elif event == "valid_epoch":
            seen["valid"].append(plain_result(info["result"]))

    start = time.time()
    result = run_recbole_flr(
        config_file_list=config_file_list, config_dict=config_dict, saved=saved, callbacks=[listen]
    )
    best_valid = result["best_valid_result"]  # plain floats (run_recbole_flr), as the listener's
    return {
        "model": seen["model"],
        "best_valid_score": float(result["best_valid_score"]),
        "valid_score_bigger": bool(result["valid_score_bigger"]),
        "best_valid_result": best_valid,
        "test_result": result["test_result"],
        "seconds": round(time.time() - start, 1),
        "epochs": len(seen["valid"]),
        "best_epoch": next((i + 1 for i, valid in enumerate(seen["valid"]) if valid == best_valid), None),
        "train_s_per_epoch": round(sum(seen["train_s"]) / len(seen["train_s"]), 2) if seen["train_s"] else None,
        "saved_model_file": result["saved_model_file"],
        "result_file": result.get("result_file"),
        "log_file": result.get("log_file"),
    }


class HyperTuning(RecBoleHyperTuning):
    r"""RecBole's :class:`recbole.trainer.HyperTuning` (its space, algorithms and early stop), with the trial written
    to the result files as soon as it ends, one progress line per trial, finished trials read back on a restart, and
    failed (NaN) trials recorded instead of ending the search.

    Args:
        objective_function (callable): as RecBole's (:func:`objective_function`).
        params (list[Param]): the checked search space.
        output_file (str): the result file: every trial as comments, then the best settings as YAML, so the file
            itself can be passed back with ``--config_files``; ``<output_file>.json`` holds the same for scripts.
        search (dict): what identifies this search (model, dataset, params, fixed settings, algo, seed); a
            restart with another search on the same output file is refused.
        progress (callable, optional): called with one line per trial (the command line prints it).
        algo, max_evals, early_stop, fixed_config_file_list: as RecBole's.
    """

    def __init__(self, objective_function, params, output_file, search, progress=None, algo="exhaustive", **kwargs):
        space = {}
        for param in params:
            space.setdefault(param.kind, {})[param.name] = param.values
        max_evals = kwargs.get("max_evals")
        super().__init__(objective_function, params_dict=space, algo=algo, **kwargs)
        if algo == "exhaustive":
            ranged = [param.where for param in params if param.kind != "choice"]
            if ranged:
                raise UserInputError(
                    f"{ranged[0]}: --algo=exhaustive needs 'choice' lines; use --algo=random or bayes."
                )
            self.algo = grid_search(params, search.get("search_seed", 0))
            self.max_evals = min(self.max_evals, max_evals) if max_evals else self.max_evals
        self.output_file, self.json_file = output_file, f"{output_file}.json"
        self.search, self.progress = search, progress or (lambda line: None)
        self.done = self._read_finished()
        self.records = []

    def run(self):
        r"""RecBole's search, without hyperopt's progress bar (the progress is one line per trial)."""
        from hyperopt import fmin

        fmin(
            self.trial,
            self.space,
            algo=self.algo,
            max_evals=self.max_evals,
            early_stop_fn=self.early_stop_fn,
            show_progressbar=False,
        )

    def _read_finished(self):
        if not os.path.isfile(self.json_file):
            return {}
        try:
            with open(self.json_file, encoding="utf-8") as f:
                earlier = json.load(f)
        except ValueError:
            earlier = None
        if not isinstance(earlier, dict) or not {"search", "trials"} <= set(earlier):
            raise UserInputError(
                f"{self.json_file} is not a run_hyper result file; it is not overwritten. Give another "
                "--output_file, or move that file away to start again."
            )
        differ = [key for key in self.search if earlier.get("search", {}).get(key) != self.search[key]]
        if differ:
            raise UserInputError(
                f"{self.json_file} holds the trials of another search (it differs in: {', '.join(differ)}); it is "
                "not overwritten. Give another --output_file, or move that file away to start again."
            )
        return {record["params_str"]: record for record in earlier["trials"]}

    def trial(self, params):
        r"""One trial: the settings hyperopt drew, trained and tested (or read back from a finished earlier run)."""
        import hyperopt

        params = {name: _plain(_whole(value)) for name, value in params.items()}
        key = self.params2str(params)
        record = self.done.get(key)
        if record is None:
            try:
                record = self.objective_function(dict(params), self.fixed_config_file_list)
            except NonFiniteLossError as error:
                record = {"failed": str(error), "best_valid_score": None, "seconds": None}
            record = dict(record, params=params, params_str=key)
        read_back = key in self.done
        self.records.append(record)
        if record.get("failed"):
            self._write()
            self.progress(f"trial {len(self.records)}/{self.max_evals} {key}: failed: {record['failed']}")
            return {"status": hyperopt.STATUS_FAIL, "loss": FAILED_LOSS}
        self.params2result[key] = record
        score, bigger = record["best_valid_score"], record["valid_score_bigger"]
        if self.best_score is None or (score > self.best_score if bigger else score < self.best_score):
            self.best_score, self.best_params = score, params
        self._write()
        self.progress(self._line(record, read_back))
        return {"loss": -score if bigger else score, "status": hyperopt.STATUS_OK}

    def _line(self, record, read_back):
        metric = self.search.get("valid_metric", "score").lower()
        test = (record["test_result"] or {}).get(metric)  # None: the run had no test set
        when = "read back from the result file" if read_back else f"{record['seconds']:.0f} s"
        epochs = f"{record['epochs']} epochs (best {record['best_epoch']})" if record.get("epochs") else ""
        best = " *best so far*" if record["params"] == self.best_params else ""
        test_text = f"{test:.4f}" if test is not None else "-"
        return (
            f"trial {len(self.records)}/{self.max_evals} {record['params_str']}: valid {metric} "
            f"{record['best_valid_score']:.4f}, test {test_text}, {epochs}, {when}{best}"
        )

    def best_record(self):
        r"""dict: the finished trial with the best valid score (RecBole's rule: the first of equal scores), or None."""
        return self.params2result.get(self.params2str(self.best_params)) if self.best_params else None

    def _write(self):
        done = {record["params_str"]: record for record in list(self.done.values()) + self.records}
        trials = list(done.values())
        best = self.best_record()
        _write_text(
            self.json_file,
            json.dumps({"search": self.search, "trials": trials, "best": best}, indent=1, sort_keys=False) + "\n",
        )
        _write_text(self.output_file, result_text(self.search, trials, best))

    def export_result(self, output_file=None):
        r"""The result files are written after every trial; this writes them once more (RecBole's interface)."""
        self._write()


def grid_search(params, seed):
    r"""hyperopt's ``algo`` for ``--algo=exhaustive``: every point of the grid of choices once, in a seeded random
    order. RecBole 1.2.1's ``exhaustive_search`` draws with ``np.random.RandomState``, which hyperopt >= 0.2.7 refuses
    (``'RandomState' object has no attribute 'integers'``)."""
    from hyperopt.base import miscs_update_idxs_vals

    names = [param.name for param in params]
    points = grid_order(params, seed)

    def suggest(new_ids, domain, trials, seed):
        done = {tuple(trial["misc"]["vals"][name][0] for name in names) for trial in trials.trials}
        todo = [point for point in points if point not in done]
        docs = []
        for new_id, point in zip(new_ids, todo):
            misc = dict(tid=new_id, cmd=domain.cmd, workdir=domain.workdir)
            idxs = {name: [new_id] for name in names}
            miscs_update_idxs_vals([misc], idxs, {name: [index] for name, index in zip(names, point)})
            docs.extend(trials.new_trial_docs([new_id], [None], [domain.new_result()], [misc]))
        return docs

    return suggest


def grid_order(params, seed):
    r"""Every point of the grid of choices, as a tuple of value indices (one per param, in ``params`` order), in the
    seeded random order in which ``--algo=exhaustive`` (:func:`grid_search`) tries them."""
    points = list(itertools.product(*(range(len(param.values)) for param in params)))
    random.Random(seed).shuffle(points)
    return points


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "item"):  # numpy scalars from hyperopt's uniform draws
        return value.item()
    return value


def result_text(search, trials, best):
    r"""The result file: the search and every trial as ``#`` comments (settings, valid and test metrics, epochs,
    seconds, checkpoint), then the best settings as YAML: the file itself is a config file for ``--config_files``."""
    lines = [
        f"# run_hyper: {search['model']} on {search['dataset']}, algo {search['algo']}, {len(trials)} trial(s) so far",
        f"# params file: {search['params_file']}; fixed: config files {search['config_files']}, "
        f"command line {search['fixed']}",
        "",
    ]
    for number, record in enumerate(trials, 1):
        lines.append(f"# trial {number}: {record['params_str']}")
        if record.get("failed"):
            lines += [f"#   failed: {record['failed']}", ""]
            continue
        lines.append(
            f"#   {record['seconds']} s, {record['epochs']} epochs (best {record['best_epoch']}), "
            f"{record['train_s_per_epoch']} s per training epoch, checkpoint {record['saved_model_file']}"
        )
        for name, result in (("valid", record["best_valid_result"]), ("test", record["test_result"])):
            shown = "  ".join(f"{metric} {value:.4f}" for metric, value in (result or {}).items())
            lines.append(f"#   {name}: {shown or '-'}")
        lines.append("")
    if best:
        lines += [
            f"# best: trial {trials.index(best) + 1} (valid score {best['best_valid_score']:.4f}); the settings below "
            "are YAML: pass this file back with --config_files",
            yaml.safe_dump(best["params"], default_flow_style=False, sort_keys=False).rstrip(),
        ]
    return "\n".join(lines) + "\n"


def _write_text(path, text):
    r"""``text`` to ``path`` through the checkpoints' atomic write (a kill never leaves half a result file)."""
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda tmp_path: pathlib.Path(tmp_path).write_text(text, encoding="utf-8"))


def fixed_settings(argv=None):
    r"""The ``--key=value`` settings of a command line (what RecBole's Config reads from ``sys.argv``), as a dict of
    strings; the run script's own options are not among them."""
    fixed = {}
    for arg in (sys.argv[1:] if argv is None else argv):
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            fixed[key] = value
    return fixed
