"""Evaluate a model: `python -m benchmarks.evaluate TASK ...`.

The first argument picks the evaluation; each lives in its own module that provides
`HELP`, `add_arguments(parser)` and `run(args) -> int`, so a new one (a game
evaluation, say) is one more entry in `EVALUATIONS`. Modules are imported only when
their subcommand is built, and heavy dependencies (torch) only when one runs.

    python -m benchmarks.evaluate sat --data DIR/test.jsonl --model smollm2-135m --samples 12
    python -m benchmarks.evaluate env=kuhn_poker model=RUN_DIR opponent=random games=400

Game evaluations take ``key=value`` arguments like the trainer (see benchmarks.game_eval).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from typing import Sequence

EVALUATIONS = {
    "sat": "benchmarks.sat_eval",
}


def check_output_path(path: str, option: str) -> None:
    """ValueError unless a report can be written at `path`: called before any model
    loads, so that a long evaluation never ends in a failed write. Creates missing
    parent folders and writes (then removes) a probe file beside `path`."""
    if os.path.isdir(path):
        raise ValueError(f"{option}={path!r} is a directory; give a file path such as {os.path.join(path, 'report.json')!r}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is read-only")
    except OSError as error:
        raise ValueError(f"{option}={path!r} cannot be written: {error.strerror or error}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description=__doc__.split("\n")[0])
    subcommands = parser.add_subparsers(dest="evaluation", required=True, metavar="TASK")
    for name, module_name in EVALUATIONS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(subcommands.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and "=" in argv[0] and not argv[0].startswith("-"):
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
