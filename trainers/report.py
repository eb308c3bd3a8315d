"""The end-of-run report: a before/after table on the terminal and `summary.png`.

Both read the run's evaluation files (``eval/step_XXXXXXXX.json``), so a resumed run's
report covers the evaluations written before the resume too.
"""

from __future__ import annotations

import json
from pathlib import Path


def evaluation_history(eval_dir) -> list[dict]:
    """Every evaluation of the run, by step."""
    files = sorted(Path(eval_dir).glob("step_*.json"))
    history = []
    for file in files:
        try:
            history.append(json.loads(file.read_text()))
        except ValueError:
            continue
    return sorted(history, key=lambda e: e["step"])


def series(history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Plottable numbers per evaluation: exploitability, mean return and invalid rate per opponent, pass@1, rating."""
    from trainers.ratings import policy_name

    out: dict[str, list[tuple[int, float]]] = {}
    for evaluation in history:
        step = evaluation["step"]
        for key, value in evaluation.items():
            if key.endswith("/exploitability"):
                out.setdefault(f"exploitability {key[: -len('/exploitability')]}", []).append((step, value))
            elif isinstance(value, dict) and "mean_return" in value and not value.get("opponent", "").startswith("step_"):
                out.setdefault(f"mean return vs {key}", []).append((step, value["mean_return"]))
                out.setdefault(f"invalid rate vs {key}", []).append((step, value["invalid_rate"]))
            elif isinstance(value, dict) and "pass_at_1" in value:
                out.setdefault(f"pass@1 {key}", []).append((step, value["pass_at_1"]))
        rating = evaluation.get("ratings", {}).get(policy_name(step))
        if rating is not None:
            out.setdefault("rating (Elo)", []).append((step, rating))
    return out


def before_after_rows(history: list[dict]) -> list[tuple[str, float, float]]:
    """(metric, first evaluation's value, last evaluation's value) for every series."""
    rows = []
    for name, points in series(history).items():
        if len(points) >= 1:
            rows.append((name, points[0][1], points[-1][1]))
    return rows


def print_before_after(eval_dir) -> None:
    history = evaluation_history(eval_dir)
    if not history:
        return
    first, last = history[0]["step"], history[-1]["step"]
    rows = before_after_rows(history)
    width = max((len(name) for name, _, _ in rows), default=10)
    print(f"\n{'':<{width}}  {'step ' + str(first):>10}  {'step ' + str(last):>10}")
    for name, before, after in rows:
        print(f"{name:<{width}}  {before:>10.3f}  {after:>10.3f}")


def write_summary_plot(eval_dir, path) -> Path | None:
    """Three panels per evaluated step: exploitability (or pass@1), mean return per opponent, invalid rate."""
    history = evaluation_history(eval_dir)
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = series(history)
    panels = [
        ("exploitability / pass@1", [k for k in data if k.startswith(("exploitability", "pass@1"))]),
        ("mean return vs opponent", [k for k in data if k.startswith("mean return")]),
        ("invalid rate", [k for k in data if k.startswith("invalid rate")]),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for axis, (title, keys) in zip(axes, panels):
        for key in keys:
            steps, values = zip(*data[key])
            axis.plot(steps, values, marker="o", label=key)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if keys:
            axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
