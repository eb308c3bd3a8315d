"""OpenRLHF 0.11.2's own `train_ppo_ray` command line, rebuilt from its installed source.

`openrlhf/cli/train_ppo_ray.py` builds its argparse parser and validates the parsed
arguments inside `if __name__ == "__main__":`, and importing the module pulls in vLLM and
DeepSpeed. So the block is read with `ast` from the installed file and split at
``args = parser.parse_args()``:

* the statements before it build the parser (`openrlhf_parser()`): exactly OpenRLHF's
  flags, types, choices and defaults, importable anywhere, GPU or not;
* the statements after it (hierarchise the dotted names, OpenRLHF's own checks and
  defaults, then ``train(args)``) run in `run(argv, train)` with the caller's `train`.

`selfplay_parser()` is OpenRLHF's parser plus what this suite registers: the estimator
choice ``rae`` for ``--algo.advantage.estimator`` and ``--algo.advantage.rae_alpha``.
The layout of the block is checked against the pinned version (`OPENRLHF_VERSION`).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.metadata
import importlib.util
import os
from pathlib import Path

from trainers.backends.openrlhf import OPENRLHF_VERSION

MODULE = "openrlhf.cli.train_ppo_ray"
RAE_ESTIMATOR = "rae"
RAE_ALPHA_FLAG = "--algo.advantage.rae_alpha"


def check_version() -> None:
    try:
        installed = importlib.metadata.version("openrlhf")
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"backend=openrlhf needs openrlhf=={OPENRLHF_VERSION} (pip install --no-deps openrlhf=={OPENRLHF_VERSION})"
        ) from None
    if installed != OPENRLHF_VERSION:
        raise RuntimeError(
            f"trainers.backends.openrlhf is written for openrlhf=={OPENRLHF_VERSION}; openrlhf {installed} is installed"
        )


def source_path() -> Path:
    spec = importlib.util.find_spec(MODULE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{MODULE} is not installed")
    return Path(spec.origin)


def main_block() -> tuple[list[ast.stmt], list[ast.stmt]]:
    """The `__main__` block of train_ppo_ray.py: (parser construction, post-parse statements)."""
    check_version()
    tree = ast.parse(source_path().read_text(), filename=str(source_path()))
    block = next((node for node in tree.body if _is_main_guard(node)), None)
    if block is None:
        raise RuntimeError(f"{source_path()} has no `if __name__ == \"__main__\":` block")
    for i, statement in enumerate(block.body):
        if _is_parse_args(statement):
            return block.body[:i], block.body[i + 1:]
    raise RuntimeError(f"{source_path()}: no `args = parser.parse_args()` in its __main__ block")


def openrlhf_parser() -> argparse.ArgumentParser:
    """OpenRLHF's own parser, built by its own statements."""
    construction, _ = main_block()
    namespace = _namespace()
    exec(compile(ast.Module(body=construction, type_ignores=[]), str(source_path()), "exec"), namespace)
    return namespace["parser"]


def selfplay_parser() -> argparse.ArgumentParser:
    """OpenRLHF's parser with the RAE estimator registered."""
    parser = openrlhf_parser()
    estimator = next(a for a in parser._actions if "--algo.advantage.estimator" in a.option_strings)
    estimator.choices = [*estimator.choices, RAE_ESTIMATOR]
    parser.add_argument(
        RAE_ALPHA_FLAG,
        type=float,
        default=0.95,
        help="rae: EMA decay of the per-(env, role) baselines (selfplay-suite)",
    )
    return parser


def run(argv: list[str], train) -> object:
    """Parse `argv` with `selfplay_parser`, run OpenRLHF's post-parse statements, call `train(args)`.

    Returns the hierarchised args (what `train` received).
    """
    _, post_parse = main_block()
    parser = selfplay_parser()
    args = parser.parse_args(argv)
    if not 0 < getattr(args, RAE_ALPHA_FLAG[2:]) < 1:
        parser.error(f"{RAE_ALPHA_FLAG} must lie in (0, 1)")
    received = {}

    def capture(parsed):
        received["args"] = parsed
        return train(parsed)

    namespace = _namespace()
    namespace.update(parser=parser, args=args, train=capture)
    exec(compile(ast.Module(body=post_parse, type_ignores=[]), str(source_path()), "exec"), namespace)
    return received.get("args")


def _namespace() -> dict:
    # The block's free names: the module imports `argparse`, `os` and `from datetime import datetime`.
    return {"__name__": MODULE, "argparse": argparse, "os": os, "datetime": datetime.datetime}


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    return (
        isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _is_parse_args(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id == "args"
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and node.value.func.attr == "parse_args"
    )
