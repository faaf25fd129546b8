"""benchmarks/ is a toolkit: at most 8 short scripts at its top level (the helper module common.py among them), the
research probes in benchmarks/research/, no script importing another (only common.py and the package), and every
script answering --help from any working directory."""

import ast
import contextlib
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
MAX_TOP_LEVEL, MAX_LINES = 8, 500
HEAVY = {"torch", "numpy", "scipy", "recbole", "recbole_flr", "transformers"}  # a --help that imports one is slow


def scripts():
    r"""Every .py of benchmarks/ and benchmarks/research/ (not the git-ignored scratch/), as paths from the checkout."""
    found = glob.glob(os.path.join(BENCHMARKS, "*.py")) + glob.glob(os.path.join(BENCHMARKS, "research", "*.py"))
    return sorted(os.path.relpath(path, ROOT) for path in found)


def imports(path):
    r"""The top-level names of the modules a file imports (anywhere in it), and those imported at module level."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names, module_level = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found = {node.module.split(".")[0]}
        else:
            continue
        names |= found
        module_level |= found if node in tree.body else set()
    return names, module_level


def test_the_top_level_holds_at_most_8_short_files():
    top = [path for path in scripts() if os.path.dirname(path) == "benchmarks"]
    assert "benchmarks/common.py" in top, "benchmarks/common.py, the one helper module, is missing"
    assert len(top) <= MAX_TOP_LEVEL, (
        f"benchmarks/ holds {len(top)} .py files at its top level, more than {MAX_TOP_LEVEL}: {', '.join(top)}; "
        "a research probe belongs in benchmarks/research/"
    )
    long = []
    for path in top:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            count = sum(1 for _ in f)
        if count > MAX_LINES:
            long.append(f"{path} ({count} lines)")
    assert not long, f"over {MAX_LINES} lines: {', '.join(long)}"


def test_no_script_imports_another_script_only_common():
    names = {os.path.basename(path)[:-3] for path in scripts()} - {"common"}
    offenders = [f"{path} imports {name}" for path in scripts() for name in sorted(imports(path)[0] & names)]
    assert not offenders, "shared code goes in benchmarks/common.py: " + "; ".join(offenders)
    assert "research" not in imports("benchmarks/common.py")[0]


#: runs each of its arguments as ``<script> --help`` in this one process (torch and the package imported once), with
#: sys.path and the ``common`` module reset between scripts, so each must find common.py on its own
HELP_RUNNER = r"""
import contextlib, io, runpy, sys
base = list(sys.path)
for script in sys.argv[1:]:
    sys.path[:] = base
    sys.modules.pop("common", None)
    sys.argv, out = [script, "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
        code = "no exit"
    except SystemExit as exit:
        code = exit.code or 0
    except BaseException as error:
        code = repr(error)
    print(f"@@\t{script}\t{code if code else ('0' if 'usage:' in out.getvalue() else 'no usage line')}")
"""


def test_every_script_answers_help(tmp_path):
    r"""One process per script whose module level imports nothing heavy, side by side; the others (torch, the package)
    in one more process. From another working directory, with no dataset: --help must need neither."""
    cheap, heavy = [], []
    for path in scripts():
        if path != "benchmarks/common.py":  # the helper module, not a script
            (heavy if imports(path)[1] & HEAVY else cheap).append(os.path.join(ROOT, path))
    env = dict(os.environ, PYTHONPATH="")  # the scripts find the checkout themselves (common.py)
    with contextlib.ExitStack() as stack:
        runs = {
            path: stack.enter_context(
                subprocess.Popen(
                    [sys.executable, path, "--help"],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            for path in cheap
        }
        shared = subprocess.run(
            [sys.executable, "-c", HELP_RUNNER, *heavy], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        failed = []
        for path, proc in runs.items():
            out, err = proc.communicate(timeout=120)
            if proc.returncode or "usage:" not in out:
                failed.append(f"{os.path.relpath(path, ROOT)}: exit {proc.returncode}: {err.strip()[-300:]}")
    answers = dict(line.split("\t")[1:] for line in shared.stdout.splitlines() if line.startswith("@@\t"))
    for path in heavy:
        if answers.get(path) != "0":
            failed.append(f"{os.path.relpath(path, ROOT)}: {answers.get(path, shared.stderr.strip()[-300:])}")
    assert cheap and heavy and not failed, "--help fails: " + " | ".join(failed)
