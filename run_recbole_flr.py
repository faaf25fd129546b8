"""Train and test FLR, or any RecBole model, with RecBole's interface.

    python run_recbole_flr.py --model=FLR --dataset=ml-100k
    python run_recbole_flr.py --model=SASRec --dataset=ml-1m --data_path=../shared/datasets
    python run_recbole_flr.py -m FLR -d ml-100k --config_files "a.yaml b.yaml" --n_factors=3
    python run_recbole_flr.py -m FLR -d ml-100k --resume_from=saved/FLR-ml-100k-<time>-<id>-last.pth

Any other ``--key=value`` reaches RecBole's Config and overrides the YAML files. The log goes to stderr; stdout gets
one table at the end: the best valid and test metrics, then the checkpoint, result file and log of the run.
"""

import argparse
import sys

from recbole_flr.errors import USER_ERRORS, user_error_message

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", type=str, default="FLR", help="name of the model (FLR or a RecBole model)")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="name of the dataset")
    parser.add_argument("--config_files", type=str, default=None, help="YAML files, separated by spaces")
    parser.add_argument("--nproc", type=int, default=1, help="the number of processes in this group")
    parser.add_argument("--ip", type=str, default="localhost", help="the ip of the master node")
    parser.add_argument("--port", type=str, default="5678", help="the port of the master node")
    parser.add_argument("--world_size", type=int, default=-1, help="total number of processes")
    parser.add_argument("--group_offset", type=int, default=0, help="the global rank offset of this group")
    args, _ = parser.parse_known_args()

    config_file_list = args.config_files.strip().split(" ") if args.config_files else None
    from recbole_flr.quick_start import run
    from recbole_flr.run_files import result_table

    try:
        result = run(
            args.model,
            args.dataset,
            config_file_list=config_file_list,
            nproc=args.nproc,
            world_size=args.world_size,
            ip=args.ip,
            port=args.port,
            group_offset=args.group_offset,
        )
    except USER_ERRORS as error:
        sys.exit(user_error_message(error))
    except KeyboardInterrupt:  # the log has said how to resume
        sys.exit(130)
    if result is not None:  # the one thing on stdout: `> results.txt` keeps it (the log goes to stderr)
        print(result_table(result, args.model, args.dataset))
