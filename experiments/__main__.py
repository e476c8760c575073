"""The command line: `python -m experiments NAME [--quick]` runs one experiment and saves its
figure and results.json; `python -m experiments --list` names them all."""
from __future__ import annotations

import argparse
import os
import time

import experiments
from experiments import EXPERIMENTS, common
from runs import UserError, write_json

PROG = "python -m experiments"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage block or traceback
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None) -> dict | None:
    parser = _Parser(prog=PROG, description=experiments.__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", choices=sorted(EXPERIMENTS), metavar="NAME",
                        help="one of: " + ", ".join(EXPERIMENTS))
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--quick", action="store_true",
                        help="a few steps of each run (for the tests)")
    parser.add_argument("--sft_checkpoint", default="out/sft/model.pt",
                        help="starting model of the RL runs; the default one is trained with "
                             "sft.py's defaults if missing")
    parser.add_argument("--docs_dir", default=None,
                        help="where exp_NAME.png goes (default: beside results.json; "
                             "docs/regenerate.sh passes docs)")
    parser.add_argument("--out_dir", default="out/experiments",
                        help="runs and results.json (default: out/experiments)")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, description) in EXPERIMENTS.items():
            print(f"{name:<16} {description}")
        return None
    if args.name is None:
        parser.error("name an experiment (--list shows them)")
    run, description = EXPERIMENTS[args.name]
    print(f"{args.name}: {description}")
    start = time.time()
    common.SCRIPT_RUNS.clear()
    try:
        results = run(args)
    except UserError as e:
        parser.exit(2, f"{PROG}: error: {e}\n")
    results = {"experiment": args.name, "quick": args.quick,
               "seconds": round(time.time() - start, 1), **results,
               "script_runs": list(common.SCRIPT_RUNS)}
    write_json(os.path.join(args.out_dir, args.name, "results.json"), results)
    print(f"{args.name}: {results['seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
