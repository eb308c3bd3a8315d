"""A learning figure over seeds: the median and spread of what several runs recorded.

    python -m benchmarks.seed_spread RUN [RUN ...] [--figure kuhn_poker/exploitability]
                                     [--diagnostics 0,20,40] [--markdown]

Each RUN is a run directory (``config.json``, ``metrics.jsonl``, ``eval/step_*.json``), one
per seed. For every evaluated step the runs share, the figure's median, minimum and
maximum over the runs; ``final`` is each run's last evaluation (never the best one picked
afterwards). With ``--diagnostics`` also, per advantage estimator, the median (min, max)
over the runs of its correlation with the true advantage at those steps
(``advantage_diagnostics/<env>/<method>/correlation`` in ``metrics.jsonl``). Prints one
JSON line; ``--markdown`` prints the tables as well.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from trainers.learning.diagnostics import DIAGNOSED_METHODS


def evaluations(run: Path) -> dict[int, dict]:
    """``{step: evaluation}`` of a run directory."""
    found = {}
    for path in sorted((run / "eval").glob("step_*.json")):
        found[int(path.stem.removeprefix("step_"))] = json.loads(path.read_text())
    if not found:
        raise ValueError(f"{run} has no eval/step_*.json: not a run directory, or it never evaluated")
    return found


def figure_value(evaluation: dict, figure: str) -> float | None:
    """A number from an evaluation: a top-level key (``kuhn_poker/exploitability``) or a path
    into a report (``kuhn_poker/random/mean_return``, ``sat/pass_at_1``)."""
    if figure in evaluation and isinstance(evaluation[figure], (int, float)):
        return float(evaluation[figure])
    head, _, rest = figure.rpartition("/")
    report = evaluation.get(head)
    if isinstance(report, dict) and isinstance(report.get(rest), (int, float)):
        return float(report[rest])
    return None


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def figure_over_seeds(runs: list[Path], figure: str) -> dict:
    """Median, min and max of `figure` at every step all runs evaluated, and at each run's last evaluation."""
    per_run = [evaluations(run) for run in runs]
    steps = sorted(set.intersection(*(set(e) for e in per_run)))
    table = {}
    for step in steps:
        values = [figure_value(e[step], figure) for e in per_run]
        if all(v is not None for v in values):
            table[step] = spread(values)
    finals = [figure_value(e[max(e)], figure) for e in per_run]
    if any(v is None for v in finals) or not table:
        raise ValueError(f"figure {figure!r} is missing from the runs' evaluations")
    return {"steps": table, "final": spread(finals), "final_steps": [max(e) for e in per_run]}


def diagnostics_over_seeds(runs: list[Path], steps: list[int]) -> dict:
    """Per environment and estimator: median (min, max) correlation with the true advantage at `steps`."""
    per_run = []
    for run in runs:
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        per_run.append({m["step"]: m for m in lines})
    result: dict = {}
    for step in steps:
        rows = [metrics.get(step) for metrics in per_run]
        if any(row is None for row in rows):
            raise ValueError(f"not every run has a metrics line for step {step}")
        keys = {k for row in rows for k in row if k.startswith("advantage_diagnostics/") and k.endswith("/correlation")}
        if not keys:
            raise ValueError(f"step {step} has no advantage diagnostics (advantage_diagnostics=off, or a game too large)")
        for key in sorted(keys):
            _, env_id, method, _ = key.split("/")
            values = [row[key] for row in rows if key in row]
            result.setdefault(env_id, {}).setdefault(method, {})[step] = spread(values)
    return result


def markdown(report: dict, figure: str) -> str:
    lines = [f"| step | {figure}: median | min | max |", "|---|---|---|---|"]
    for step, s in report["figure"]["steps"].items():
        lines.append(f"| {step} | {s['median']:.3f} | {s['min']:.3f} | {s['max']:.3f} |")
    final = report["figure"]["final"]
    lines.append(f"| final | {final['median']:.3f} | {final['min']:.3f} | {final['max']:.3f} |")
    for env_id, methods in report.get("diagnostics", {}).items():
        steps = sorted(next(iter(methods.values())))
        lines += ["", f"| estimator ({env_id}) | " + " | ".join(f"step {s}" for s in steps) + " |",
                  "|---|" + "---|" * len(steps)]
        for method in [m for m in DIAGNOSED_METHODS if m in methods]:
            cells = [f"{methods[method][s]['median']:.2f} ({methods[method][s]['min']:.2f} to {methods[method][s]['max']:.2f})"
                     for s in steps]
            lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seed_spread", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--figure", default="kuhn_poker/exploitability")
    parser.add_argument("--diagnostics", default="", help="comma-separated steps, e.g. 0,20,40")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = {"runs": [str(r) for r in args.runs], "figure_name": args.figure, "figure": figure_over_seeds(args.runs, args.figure)}
        if args.diagnostics:
            report["diagnostics"] = diagnostics_over_seeds(args.runs, [int(s) for s in args.diagnostics.split(",")])
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.markdown:
        print(markdown(report, args.figure))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
