"""How many games of OpenSpiel and TextArena pass `envs.check`: one JSON line.

    python -m benchmarks.library_check                      # both libraries
    python -m benchmarks.library_check openspiel --seconds 60 --out check.json

Each game the adapter supports (`envs.list_envs(library)`) is checked with its default
parameters, in a child process cut after `--seconds` (a game whose random playouts run
long is reported as a timeout, not left to hang the run). The JSON line has the counts;
`--out` writes every game's result (passed checks, or the first failure).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time

LIBRARIES = ("openspiel", "textarena")


def _check(env_id: str, fuzz_examples: int, queue) -> None:
    import warnings

    import envs

    warnings.simplefilter("ignore")
    try:
        report = envs.check(env_id, fuzz_examples=fuzz_examples, cycles=20)
        queue.put({"passed": True, "checks": report.passed})
    except BaseException as error:  # any failure is this game's result, not the run's
        queue.put({"passed": False, "error": f"{type(error).__name__}: {str(error)[:300]}"})


def check_game(env_id: str, *, seconds: float, fuzz_examples: int) -> dict:
    """`envs.check(env_id)` in a child process, cut after `seconds`."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_check, args=(env_id, fuzz_examples, queue))
    start = time.perf_counter()
    process.start()
    process.join(seconds)
    if process.is_alive():
        process.kill()
        process.join()
        return {"passed": False, "error": f"timeout after {seconds:g} s"}
    result = queue.get() if not queue.empty() else {"passed": False, "error": f"exit code {process.exitcode}"}
    return {**result, "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.library_check", description=__doc__.split("\n")[0])
    parser.add_argument("libraries", nargs="*", metavar="LIBRARY", help=f"any of {', '.join(LIBRARIES)} (default: both)")
    parser.add_argument("--seconds", type=float, default=120.0, help="time limit per game (default 120)")
    parser.add_argument("--fuzz-examples", type=int, default=50)
    parser.add_argument("--out", help="write every game's result here (JSON)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.libraries if name not in LIBRARIES]
    if unknown:
        parser.error(f"unknown library {unknown[0]!r}; choose from {', '.join(LIBRARIES)}")
    import envs

    line, details = {}, {}
    for library in args.libraries or LIBRARIES:
        ids = envs.list_envs(library)
        results = {env_id: check_game(env_id, seconds=args.seconds, fuzz_examples=args.fuzz_examples) for env_id in ids}
        details.update(results)
        line[library] = {
            "supported": len(ids),
            "passed": sum(r["passed"] for r in results.values()),
            "failed": sorted(e for e, r in results.items() if not r["passed"]),
        }
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(details, handle, indent=1)
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
