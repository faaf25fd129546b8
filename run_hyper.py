"""Tune FLR, or any RecBole model, with RecBole's HyperTuning (hyperopt) and the plugin's objective function.

    python run_hyper.py --model=FLR --dataset=ml-100k --params_file=recbole_flr/properties/hyper/FLR.hyper
    python run_hyper.py --model=SASRec --dataset=ml-100k --algo=random --max_evals=8 --epochs=100
    python run_hyper.py --model=FLR --dataset=ml-100k --config_files=hyper/FLR-ml-100k.result   # the best settings

--params_file is RecBole's format, one key a line ("learning_rate choice [0.001,0.002]", "dropout uniform 0.1,0.5",
"n_layers quniform 1,3,1", "learning_rate loguniform -8,0"); by default the model's shipped file,
recbole_flr/properties/hyper/<model>.hyper. Every value is checked before any training. Any other --key=value is a
fixed setting of every trial, as in run_recbole_flr.py.

--output_file (default hyper/<model>-<dataset>.result) is rewritten after every trial: each trial's settings, valid
and test metrics, epochs and time as comments, then the best settings as YAML, so the file itself can be passed
back with --config_files; <output_file>.json holds the same for scripts. Run the same command again after an
interruption and the finished trials are read back, not trained again. Needs hyperopt (pip install -e ".[hyper]").
"""

import argparse
import os
import sys

from recbole_flr.errors import USER_ERRORS, UserInputError, user_error_message


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", type=str, default="FLR", help="name of the model (FLR or a RecBole model)")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="name of the dataset")
    parser.add_argument("--config_files", type=str, default=None, help="fixed YAML files, separated by spaces")
    parser.add_argument("--params_file", type=str, default=None, help="the search space (default: the model's)")
    parser.add_argument("--output_file", type=str, default=None, help="default: hyper/<model>-<dataset>.result")
    parser.add_argument("--algo", choices=["exhaustive", "random", "bayes"], default="exhaustive")
    parser.add_argument("--max_evals", type=int, default=None, help="trials at most (exhaustive: the grid's size)")
    parser.add_argument("--early_stop", type=int, default=10, help="stop after this many trials without a better one")
    parser.add_argument("--search_seed", type=int, default=None, help="seed of hyperopt's draws (default: 2020)")
    args, rest = parser.parse_known_args()
    sys.argv = sys.argv[:1] + rest  # what RecBole's Config reads from the command line: the fixed --key=value

    try:
        import hyperopt  # noqa: F401
    except ModuleNotFoundError:
        sys.exit('run_hyper.py needs hyperopt: pip install -e ".[hyper]" (or pip install hyperopt).')
    from recbole_flr.config import Config, validate
    from recbole_flr.hyper import (
        SEARCH_SEED,
        HyperTuning,
        check_params,
        fixed_settings,
        objective_function,
        read_params_file,
        shipped_params_file,
    )

    args.search_seed = SEARCH_SEED if args.search_seed is None else args.search_seed
    os.environ["HYPEROPT_FMIN_SEED"] = str(args.search_seed)  # hyperopt's fmin seeds its draws from it
    config_file_list = args.config_files.strip().split(" ") if args.config_files else None
    if args.max_evals is not None and args.max_evals < 1:
        raise UserInputError(f"--max_evals={args.max_evals} must be at least 1.")
    config = Config(model=args.model, dataset=args.dataset, config_file_list=config_file_list)
    validate(config)  # the model and the fixed settings, once
    params_file = args.params_file or shipped_params_file(args.model)
    if params_file is None:
        raise UserInputError(f"--params_file is needed: no search space ships for {args.model}.")
    params = read_params_file(params_file)
    fixed = fixed_settings()
    check_params(params, args.model, args.dataset, config_file_list, fixed)
    output_file = args.output_file or os.path.join("hyper", f"{args.model}-{args.dataset}.result")
    search = {
        "model": args.model,
        "dataset": args.dataset,
        "params_file": params_file,
        "params": [[p.name, p.kind, p.values] for p in params],
        "config_files": config_file_list,
        "fixed": fixed,
        "algo": args.algo,
        "search_seed": args.search_seed,
        "valid_metric": config["valid_metric"],
    }
    tuning = HyperTuning(
        lambda config_dict, files: objective_function(dict(config_dict, model=args.model, dataset=args.dataset), files),
        params,
        output_file,
        search,
        progress=lambda line: print(line, flush=True),
        algo=args.algo,
        max_evals=args.max_evals or 100,
        early_stop=args.early_stop,
        fixed_config_file_list=config_file_list,
    )
    print(f"run_hyper: {args.model} on {args.dataset}, {args.algo}, at most {tuning.max_evals} trials", flush=True)
    try:
        tuning.run()
    except KeyboardInterrupt:
        sys.exit(f"run_hyper: interrupted. The finished trials are in {output_file}; the same command continues.")
    best = tuning.best_record()
    if best is None:
        sys.exit("run_hyper: no trial finished.")
    print(f"best settings (valid {config['valid_metric']} {best['best_valid_score']:.4f}): {best['params_str']}")
    print("test: " + ", ".join(f"{metric} {value:.4f}" for metric, value in (best["test_result"] or {}).items()))
    print(f"every trial, and the best settings as YAML: {output_file} (and {output_file}.json)")


if __name__ == "__main__":
    try:
        main()
    except USER_ERRORS as error:
        sys.exit(user_error_message(error))
