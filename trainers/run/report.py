"""What a run shows: metrics columns, the progress bar and TensorBoard while it trains, and
at the end a before/after table on the terminal and `summary.png`.

The end-of-run report reads the run's evaluation files (``eval/step_XXXXXXXX.json``), so a
resumed run's report covers the evaluations written before the resume too.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

from trainers.evaluation.ratings import policy_name


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
    """Plottable numbers per evaluation: exploitability, mean return and invalid rate per opponent, pass@1, rating,
    the out-of-domain win rate per env (``OOD win rate vs random (<env>)``, and ``(all)`` over them), and
    the reasoning-transfer accuracy (``transfer accuracy (<family>)``, first and last step only)."""
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
        ood = evaluation.get("ood", {})
        for key, value in sorted(ood.items(), key=lambda item: item[0].startswith("all/")):  # "all" last
            env_id, _, opponent = key.rpartition("/")
            out.setdefault(f"OOD win rate vs {opponent} ({env_id})", []).append((step, value["win_rate"]))
        for family, value in evaluation.get("transfer", {}).items():
            out.setdefault(f"transfer accuracy ({family})", []).append((step, value["accuracy"]))
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
    """Four panels per evaluated step: exploitability (or pass@1), mean return per opponent,
    invalid rate, and the policy's rating (Elo); a fifth with the out-of-domain win rate per
    env when the run has ``eval_envs``."""
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
        ("rating (Elo)", [k for k in data if k.startswith("rating")]),
    ]
    ood = [k for k in data if k.startswith("OOD win rate")]
    if ood:
        panels.append(("out-of-domain win rate", ood))
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
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


# ---- during the run: metrics columns, the progress bar, TensorBoard ------------------


def headline(evaluation: dict) -> dict:
    """The few evaluation numbers worth a metrics column."""
    out = {}
    for key, value in evaluation.items():
        if isinstance(value, dict) and "mean_return" in value:
            out[f"eval/{key}/mean_return"] = value["mean_return"]
            out[f"eval/{key}/win_rate"] = value["win_rate"]
            out[f"eval/{key}/invalid_rate"] = value["invalid_rate"]
        elif key.endswith("exploitability"):
            out[f"eval/{key}"] = value
        elif isinstance(value, dict) and "pass_at_1" in value:
            out[f"eval/{key}/pass_at_1"] = value["pass_at_1"]
    for key, value in evaluation.get("ood", {}).items():
        env_id, _, opponent = key.rpartition("/")
        out[f"ood/{env_id}/win_rate" if opponent == "random" else f"ood/{key}/win_rate"] = value["win_rate"]
    for family, value in evaluation.get("transfer", {}).items():
        out[f"transfer/{family}/accuracy"] = value["accuracy"]
    player = policy_name(evaluation["step"])
    if player in evaluation.get("ratings", {}):
        out["eval/rating"] = evaluation["ratings"][player]
    return out


def scalars(metrics: dict):
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield key, float(value)


def postfix(metrics: dict, evaluation: dict) -> dict:
    """What moves in self-play (the mean reward of a zero-sum game is always 0): entropy,
    invalid rate, and the latest exploitability or rating."""
    postfix = {}
    if "train/entropy_choice" in metrics:
        postfix["entropy"] = f"{metrics['train/entropy_choice']:.3f}"
    elif "train/neg_logprob" in metrics:
        postfix["nll/token"] = f"{metrics['train/neg_logprob']:.2f}"
    invalid = [v for k, v in metrics.items() if k == "invalid_rate" or k.startswith("invalid_rate/")]
    if invalid:
        postfix["invalid"] = f"{max(invalid):.2f}"
    if metrics.get("phase") == "format":
        postfix["phase"] = "format"
    solved = [v for k, v in metrics.items() if k.startswith("solved/")]
    if solved:
        postfix["solved"] = f"{sum(solved) / len(solved):.2f}"
    exploitability = [v for k, v in evaluation.items() if k.endswith("exploitability")]
    if exploitability:
        postfix["exploit"] = f"{sum(exploitability) / len(exploitability):.3f}"
    elif "eval/rating" in evaluation:
        postfix["elo"] = f"{evaluation['eval/rating']:.0f}"
    postfix["s/step"] = f"{metrics['time/step_s']:.1f}"
    return postfix


def progress_bar(config, start: int):
    from tqdm import tqdm

    return tqdm(total=config.steps, initial=start, desc="selfplay", unit="step", disable=not config.progress)


def tensorboard_writer(out, config):
    """A TensorBoard writer into ``out/tb``, or None (``tensorboard=false``, or TensorBoard is
    not installed: then the run says so and goes on without it)."""
    if not config.tensorboard:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        print(
            f"warning: tensorboard=true but TensorBoard cannot be imported ({error}); no tb/ logs are written "
            "(pip install tensorboard, or set tensorboard=false)",
            file=sys.stderr,
        )
        return None
    return SummaryWriter(str(out / "tb"))
