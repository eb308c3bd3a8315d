"""Evaluate a model: `python -m benchmarks.evaluate TASK ...`.

The first argument picks the evaluation; each lives in its own module that provides
`HELP`, `add_arguments(parser)` and `run(args) -> int`, so a new one (a game
evaluation, say) is one more entry in `EVALUATIONS`. Modules are imported only when
their subcommand is built, and heavy dependencies (torch) only when one runs.

    python -m benchmarks.evaluate sat --data DIR/test.jsonl --model smollm2-135m --samples 12
    python -m benchmarks.evaluate env=kuhn_poker model=RUN_DIR opponent=random games=400
    python -m benchmarks.evaluate games=spiral_ood model=BEFORE,AFTER opponent=random

Arguments that do not start with a subcommand name are the game evaluation's ``key=value``
pairs (benchmarks.game_eval), the default evaluation. Imports run one way: this module
imports the evaluations, none of them imports it (the output-path check they share lives
in benchmarks.outputs).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from benchmarks.outputs import check_output_path  # noqa: F401  (kept importable from here)

EVALUATIONS = {
    "sat": "benchmarks.sat_eval",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description=__doc__.split("\n")[0])
    subcommands = parser.add_subparsers(dest="evaluation", required=True, metavar="TASK")
    for name, module_name in EVALUATIONS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(subcommands.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in EVALUATIONS and not argv[0].startswith("-"):
        from benchmarks import game_eval

        return game_eval.main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(EVALUATIONS[args.evaluation])
    try:
        return module.run(args)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())
