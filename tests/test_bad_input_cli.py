"""The bad-input suite, end to end: each case runs ``run_recbole_flr.py`` (or ``python -m recbole_flr.explain``) as
``__main__`` in its own process and must exit non-zero with one message that names the key or the file, and no
traceback. Almost every case stops before the dataset is read, so a fresh interpreter per case would spend nearly all
its time importing RecBole (about 4 s): one driver process imports it once and forks a child per case, two at a time,
each with its own sys.argv, stdout, stderr and exit status (the parent has run no torch op, so forking is safe). A few
cases also run in a fresh interpreter, exactly as a user starts the script."""

import json
import os
import subprocess
import sys

import pytest
from conftest import TINY_CLI_FLAGS, write_tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "run_recbole_flr.py")
TINY = ["--model=FLR", "--dataset=tiny", "--data_path={data}", *TINY_CLI_FLAGS]
NO_DATA = "--data_path={tmp}/no_data"  # a check that waited for the dataset would say the dataset is missing instead

# (case id, extra command-line arguments, strings the message must contain). "{data}", "{tmp}" are filled in (so a
# brace of a dict is written twice).
CASES = [
    ("typo-cli", ["--n_factor=3"], ["'n_factor'", "n_factors"]),
    ("typo-cli-recbole-key", ["--learning_rat=0.01"], ["'learning_rat'", "learning_rate"]),
    ("typo-yaml", ["--config_files={tmp}/typo.yaml"], ["'lamda_orth'", "lambda_orth", "typo.yaml"]),
    ("typo-grpo", ["--grpo_epoch=2"], ["'grpo_epoch'", "grpo_epochs"]),
    ("n_factors-above-range", ["--n_factors=100"], ["n_factors=100", "[1, 8]"]),
    ("n_factors-zero", ["--n_factors=0"], ["n_factors=0", "[1, 8]"]),
    ("latent_steps-above-range", ["--latent_steps=9"], ["latent_steps=9", "[1, 4]"]),
    ("grpo_num_generations-1", ["--grpo_num_generations=1"], ["grpo_num_generations"]),
    ("grpo_epsilon-1.5", ["--grpo_epsilon=1.5"], ["grpo_epsilon=1.5", "[0, 1)"]),
    ("grpo_noise_std-0", ["--grpo_noise_std=0"], ["grpo_noise_std=0", "(0, inf)"]),
    ("epochs-tilde", ["--epochs=~"], ["epochs is ~", "must be a number", "[0, inf)"]),
    ("n_factors-tilde", ["--n_factors=~"], ["n_factors is ~", "[1, 8]"]),
    ("grpo_epochs-negative", ["--grpo_epochs=-1"], ["grpo_epochs=-1"]),
    ("grpo_reward-unknown", ["--grpo_reward=accuracy"], ["grpo_reward", "logprob"]),
    ("grpo_trainable-unknown", ["--grpo_trainable=backbone"], ["grpo_trainable", "latent"]),
    ("llm_arch-unknown", ["--llm_arch=gpt9"], ["llm_arch", "qwen2"]),
    ("loss_type-BPR", ["--loss_type=BPR"], ["loss_type", "CE"]),
    ("grpo-alone-without-start", ["--train_stages=[grpo]"], ["train_stages", "resume_from"]),
    ("epochs-0-before-grpo", ["--epochs=0"], ["epochs=0", "resume_from"]),
    ("epochs-text", ["--epochs=abc"], ["epochs='abc'", "integer"]),
    ("epochs-negative", ["--epochs=-1"], ["epochs=-1"]),
    ("lambda_orth-text", ["--lambda_orth=abc"], ["lambda_orth='abc'", "number"]),
    ("hidden_size-text", ["--hidden_size=abc"], ["hidden_size='abc'"]),
    ("train_all_positions-yes", ["--train_all_positions=yes"], ["train_all_positions", "True or False"]),
    ("learning_rate-negative", ["--learning_rate=-1"], ["learning_rate=-1", "[0, inf)"]),
    ("train_batch_size-0", ["--train_batch_size=0"], ["train_batch_size=0"]),
    ("eval_batch_size-0", ["--eval_batch_size=0"], ["eval_batch_size=0"]),
    ("MAX_ITEM_LIST_LENGTH-0", ["--MAX_ITEM_LIST_LENGTH=0"], ["MAX_ITEM_LIST_LENGTH=0"]),
    ("weight_decay-negative", ["--weight_decay=-0.1"], ["weight_decay=-0.1"]),
    ("valid_metric-cutoff-not-in-topk", ["--valid_metric=NDCG@20"], ["valid_metric='NDCG@20'", "topk"]),
    ("valid_metric-not-evaluated", ["--valid_metric=AUC"], ["valid_metric='AUC'", "metrics"]),
    ("topk-zero", ["--topk=0"], ["topk"]),
    ("config-file-missing", ["--config_files={tmp}/missing.yaml"], ["missing.yaml"]),
    ("dataset-missing", ["--dataset=nowhere"], ["Dataset [nowhere]"]),
    ("item-title-with-quote", ["--data_path={tmp}/quote"], ["tiny.item, line 6", "double quote"]),
    ("inter-timestamp-text", ["--data_path={tmp}/timestamp"], ["tiny.inter, line 8", "timestamp", "not a number"]),
    ("resume-from-text-file", ["--resume_from={tmp}/notes.pth"], ["notes.pth", "not a torch checkpoint"]),
    ("resume-from-missing", ["--resume_from={tmp}/none.pth"], ["none.pth", "does not exist"]),
    # checked before the dataset is read: with no data at all, the message still names the setting
    ("resume-from-text-file-before-data", ["--resume_from={tmp}/notes.pth", NO_DATA], ["notes.pth", "not a torch"]),
    ("resume-from-missing-before-data", ["--resume_from={tmp}/none.pth", NO_DATA], ["none.pth", "does not exist"]),
    ("n_heads-not-dividing-hidden_size", ["--n_heads=3", NO_DATA], ["hidden_size=16", "n_heads=3", "multiple"]),
    ("hidden_size-0", ["--hidden_size=0", NO_DATA], ["hidden_size=0", "[1, inf)"]),
    ("n_layers-0", ["--n_layers=0", NO_DATA], ["n_layers=0", "[1, inf)"]),
    ("split-unknown", ["--eval_args={{'split': {{'XS': [0.8, 0.1, 0.1]}}}}", NO_DATA], ["'XS'", "RS", "LS", "TS"]),
    ("split-LS-mode-unknown", ["--eval_args={{'split': {{'LS': 'valid'}}}}", NO_DATA], ["'valid'", "valid_and_test"]),
    ("eval_args-typo", ["--eval_args={{'splt': {{'LS': 'valid_and_test'}}}}", NO_DATA], ["'splt'", "'split'"]),
    ("eval-mode-unknown", ["--eval_args={{'mode': 'uni'}}", NO_DATA], ["mode='uni'", "uni100"]),
    ("metric-unknown", ["--metrics=['Recall', 'NDCGG']", "--valid_metric=Recall@10"], ["'NDCGG'", "'NDCG'"]),
    ("metric-value-with-full-ranking", ["--metrics=['AUC']", "--valid_metric=AUC"], ["['AUC']", "value", "uni100"]),
    ("metrics-ranking-and-value", ["--metrics=['AUC', 'NDCG']", "--valid_metric=AUC"], ["mixes", "AUC"]),
    ("dropout-above-1", ["--hidden_dropout_prob=1.5"], ["hidden_dropout_prob=1.5", "[0, 1]"]),
    ("dropout-negative", ["--attn_dropout_prob=-0.1"], ["attn_dropout_prob=-0.1", "[0, 1]"]),
    ("lora_dropout-above-1", ["--lora_dropout=2"], ["lora_dropout=2", "[0, 1]"]),
    ("flr-key-given-to-sasrec", ["--model=SASRec", "--n_factors=3"], ["a setting of FLR", "not of SASRec"]),
    ("use_gpu-on-the-cpu", ["--use_gpu=True"], ["use_gpu=True", "CPU"]),
    ("valid_metric-without-cutoff", ["--valid_metric=NDCG"], ["valid_metric='NDCG'", "NDCG@10"]),
    ("gpu_id-text", ["--gpu_id=abc"], ["gpu_id='abc'", "'0,1'"]),
    ("model-name-in-the-wrong-case", ["--model=sasrec"], ["Unknown model [sasrec]", "'SASRec'"]),
    ("config-file-is-a-folder", ["--config_files={tmp}"], ["Config file <tmp>", "is a folder"]),
    ("checkpoint_dir-is-a-file", ["--checkpoint_dir={tmp}/notes.pth"], ["checkpoint_dir=", "is a file"]),
    ("dataset-empty", ["--dataset="], ["--dataset is empty"]),
]
EXPLAIN_CASES = [
    ("explain-text-file", ["--model_file={tmp}/notes.pth", "--user_id=1"], ["notes.pth"]),
    ("explain-missing-file", ["--model_file={tmp}/none.pth", "--user_id=1"], ["none.pth", "does not exist"]),
]


def _prepare(tmp):
    data = os.path.join(tmp, "data")
    write_tiny_dataset(data)
    with open(os.path.join(tmp, "typo.yaml"), "w") as f:
        f.write("lamda_orth: 0.1\n")
    with open(os.path.join(tmp, "notes.pth"), "w") as f:
        f.write("these are my notes, not a checkpoint\n")
    path = write_tiny_dataset(os.path.join(tmp, "quote"))
    with open(os.path.join(path, "tiny.item")) as f:
        lines = f.read().split("\n")
    lines[5] = lines[5].split("\t")[0] + '\t"Quoted" title here'  # line 6 of the file
    with open(os.path.join(path, "tiny.item"), "w") as f:
        f.write("\n".join(lines))
    path = write_tiny_dataset(os.path.join(tmp, "timestamp"))
    with open(os.path.join(path, "tiny.inter")) as f:
        lines = f.read().split("\n")
    lines[7] = "\t".join(lines[7].split("\t")[:2] + ["abc"])  # line 8 of the file
    with open(os.path.join(path, "tiny.inter"), "w") as f:
        f.write("\n".join(lines))
    return data


def _command(case_args, tmp, data, explain=False):
    fill = {"tmp": tmp, "data": data}
    case_args = [arg.format(**fill) for arg in case_args]
    if explain:
        return [sys.executable, "-m", "recbole_flr.explain", *case_args]
    overridden = {arg.split("=", 1)[0] for arg in case_args}
    base = [arg.format(**fill) for arg in TINY if arg.split("=", 1)[0] not in overridden]
    return [sys.executable, SCRIPT, *base, *case_args]


DRIVER = r"""
import json, os, runpy, sys, traceback
import recbole_flr, recbole_flr.explain  # noqa: F401  (imported once, before forking)

jobs = json.load(open(sys.argv[1]))
results, running, pending = {}, {}, list(jobs.items())
parallel = max(1, min(2, os.cpu_count() or 1))
while pending or running:
    while pending and len(running) < parallel:
        name, command = pending.pop(0)
        out, err = sys.argv[2] + "/" + name + ".out", sys.argv[2] + "/" + name + ".err"
        pid = os.fork()
        if pid == 0:
            for fd, path in ((1, out), (2, err)):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            code = 0
            try:
                sys.argv = command[1:]
                if command[1] == "-m":
                    sys.argv = command[2:]
                    runpy.run_module(command[2], run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(command[1], run_name="__main__")
            except SystemExit as stop:  # what the interpreter does with it
                if isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr)
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        running[pid] = (name, out, err)
    pid, status = os.wait()
    name, out, err = running.pop(pid)
    results[name] = [os.waitstatus_to_exitcode(status), open(out).read(), open(err).read()]
json.dump(results, open(sys.argv[2] + "/results.json", "w"))
"""
FRESH = ("typo-cli", "dataset-missing", "explain-text-file")  # also run in a fresh interpreter each


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("bad_input_cli"))
    data = _prepare(tmp)
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("RECBOLE_FLR_TRACEBACK", None)
    jobs = {name: _command(args, tmp, data) for name, args, _ in CASES}
    jobs.update({name: _command(args, tmp, data, explain=True) for name, args, _ in EXPLAIN_CASES})
    output = os.path.join(tmp, "output")
    os.makedirs(output)
    with open(os.path.join(tmp, "jobs.json"), "w") as f:
        json.dump(jobs, f)
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER, os.path.join(tmp, "jobs.json"), output],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp,
        env=env,
    )
    assert driver.returncode == 0, driver.stderr[-3000:]
    with open(os.path.join(output, "results.json")) as f:
        results = {name: subprocess.CompletedProcess(jobs[name], *result) for name, result in json.load(f).items()}
    for name in FRESH:
        results[name + " (fresh interpreter)"] = subprocess.run(
            jobs[name], capture_output=True, text=True, timeout=300, cwd=tmp, env=env
        )
    return results, tmp


def test_the_suite_is_large_enough():
    assert len(CASES) + len(EXPLAIN_CASES) >= 30


@pytest.mark.parametrize(
    "name, expected",
    [(name, expected) for name, _, expected in CASES + EXPLAIN_CASES]
    + [(f"{name} (fresh interpreter)", expected) for name, _, expected in CASES + EXPLAIN_CASES if name in FRESH],
)
def test_bad_input_exits_with_one_message_naming_it(outcomes, name, expected):
    results, tmp = outcomes
    result = results[name]
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    message = result.stderr.replace(tmp, "<tmp>")
    assert "recbole_flr: error:" in message, output[-2000:]
    for part in expected:
        assert part.replace(tmp, "<tmp>") in message, (part, message[-2000:])
