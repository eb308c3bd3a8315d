"""Reasoning transfer: `python -m benchmarks.transfer model=A,B`.

SPIRAL asks whether self-play on games makes a model reason better on problems no game
taught. This benchmark answers that offline: the same problems, seeded, for one model or
for two (A before training, B after), each answer scored exactly, and for two models the
paired difference B - A per item with a 95% interval and an exact sign test
(`trainers.evaluation.out_of_domain.paired_scores`, the test the game evaluation uses).

Problems come from reasoning-gym's procedural generators (``pip install
'selfplay-suite[transfer]'``): by default `count` items of an arithmetic family
(``basic_arithmetic``) and of a logic family (``knights_knaves``), item i of a family
built from the seed, so every model and every machine meets the same problems; each
answer is scored by the family's own scorer (a correct answer scores 1, anything less 0).
Users with their own datasets (MATH-500, GSM8K exported locally) give
``data=FILE.jsonl`` instead, one ``{"question": ..., "answer": ...}`` object a line,
scored by exact match of the reply's last ``\\boxed{}`` (or, without one, its final
number) against the answer (numbers compare as numbers).

Keys (key=value): model (one, or two comma-separated: A,B), tasks (comma-separated
reasoning-gym families), count (items per family), data (a JSONL file; replaces tasks),
seed, temperature (0: greedy), max_new_tokens, prompt (think: reason, then box the answer;
direct: the boxed answer only), threads, out (a JSON report file).

Prints a table and, last, one JSON line with every number.
"""

from __future__ import annotations

import json
import math
import sys

from benchmarks.outputs import check_output_path
from trainers.run.config import split_list
from trainers.evaluation.out_of_domain import (  # noqa: F401  (the problems and their scoring live with the trainer's evaluation)
    TRANSFER_PROMPTS as PROMPTS,
    Item,
    exact_match,
    file_items,
    final_answer,
    last_boxed,
    normalize,
    reasoning_gym_items,
    transfer_messages,
)

DEFAULTS = {
    "model": "smollm2-135m",
    "tasks": "basic_arithmetic,knights_knaves",
    "count": "50",
    "data": "",
    "seed": "0",
    "temperature": "0",
    "max_new_tokens": "256",
    "prompt": "think",
    "threads": "0",
    "out": "",
}
SAMPLING_STREAM = "transfer"
"""The seed stream of the models' sampling (the same for every model: a paired comparison)."""


# --------------------------------------------------------------------------- options


def parse(arguments: list[str]) -> dict:
    """``key=value`` pairs over `DEFAULTS`; ValueError naming an unknown key or a bad value."""
    options = dict(DEFAULTS)
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if not sep:
            raise ValueError(f"arguments are key=value pairs, got {argument!r}; keys: {', '.join(DEFAULTS)}")
        if key not in DEFAULTS:
            raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(DEFAULTS)}")
        options[key] = value
    for key, kind, low in (("count", int, 1), ("seed", int, 0), ("max_new_tokens", int, 1), ("threads", int, 0), ("temperature", float, 0.0)):
        try:
            options[key] = kind(options[key])
        except ValueError:
            raise ValueError(f"{key}={options[key]!r}: expected a {kind.__name__}") from None
        if not options[key] >= low or (kind is float and not math.isfinite(options[key])):
            raise ValueError(f"{key} must be >= {low}, got {options[key]}")
    if options["prompt"] not in PROMPTS:
        raise ValueError(f"prompt={options['prompt']!r} is not valid; choose one of: {', '.join(PROMPTS)}")
    if not 1 <= len(split_list(options["model"])) <= 2:
        raise ValueError(f"model={options['model']!r}: give one model, or two (A,B) for a paired comparison")
    return options


def load_items(options: dict) -> list[Item]:
    if options["data"]:
        return file_items(options["data"])
    families = split_list(options["tasks"])
    if not families:
        raise ValueError("tasks= names no family; for example tasks=basic_arithmetic,knights_knaves")
    return [item for family in families for item in reasoning_gym_items(family, count=options["count"], seed=options["seed"])]


def model_labels(options: dict) -> dict[str, str]:
    """Label -> model: "A" and "B" for two models, else the model itself."""
    models = split_list(options["model"])
    return dict(zip(("A", "B"), models)) if len(models) == 2 else {models[0]: models[0]}


# ------------------------------------------------------------------------- evaluation


def answer_scores(policy, items: list[Item], *, prompt: str, seed: int, temperature: float) -> dict:
    """``{item key: score}`` of the policy's replies (one per item, sampled with `seed`)."""
    from trainers.run.seeds import derive_seed

    decisions = policy.act([transfer_messages(item, prompt) for item in items], seed=derive_seed(seed, SAMPLING_STREAM),
                           temperature=temperature)
    return {item.key: item.score(decision.text) for item, decision in zip(items, decisions)}


def accuracy(scores: dict, source: str | None = None) -> dict:
    """Share of correct answers (of one source, or all) with its 95% Wilson interval."""
    from trainers.evaluation.evaluate import wilson_interval

    values = [v for (s, _), v in scores.items() if source is None or s == source]
    correct = sum(values)
    low, high = wilson_interval(round(correct), len(values))
    return {"items": len(values), "accuracy": correct / len(values), "accuracy_ci95": [round(low, 4), round(high, 4)]}


def evaluate_policy(policy, items: list[Item], options: dict) -> tuple[dict, dict]:
    """(scores by item key, accuracy per source and ``all``)."""
    scores = answer_scores(policy, items, prompt=options["prompt"], seed=options["seed"], temperature=options["temperature"])
    sources = list(dict.fromkeys(item.source for item in items))
    return scores, {**{source: accuracy(scores, source) for source in sources}, "all": accuracy(scores)}


def _policy(model: str, options: dict):
    from trainers.generation import TransformersBackend
    from trainers.models import load_model
    from trainers.rollouts.policy import LanguagePolicy

    loaded, tokenizer = load_model(model)
    return LanguagePolicy(
        TransformersBackend(loaded.requires_grad_(False), tokenizer), tokenizer, mode="direct",
        max_new_tokens=options["max_new_tokens"], temperature=options["temperature"],
    )


def run(options: dict) -> dict:
    """Every check before a model loads, then each model on the same items; the paired test for two."""
    from trainers.models import check_model_name
    from trainers.evaluation.out_of_domain import paired_scores

    items = load_items(options)
    for model in split_list(options["model"]):
        check_model_name(model)
    if options["out"]:
        check_output_path(options["out"], "out")
    if options["threads"]:
        import torch

        torch.set_num_threads(options["threads"])
    report = {"benchmark": "transfer", "options": options, "models": {}}
    scores = {}
    for label, model in model_labels(options).items():
        scores[label], report["models"][label] = evaluate_policy(_policy(model, options), items, options)
        report["models"][label]["model"] = model
    if len(scores) == 2:
        a, b = scores.values()
        sources = [key for key in report["models"]["A"] if key not in ("all", "model")]
        report["paired"] = {
            source: paired_scores({k: v for k, v in a.items() if k[0] == source}, {k: v for k, v in b.items() if k[0] == source})
            for source in sources
        }
        report["paired"]["all"] = paired_scores(a, b)
    return report


def table(report: dict) -> str:
    """Accuracy per source for each model and, for two, the paired difference B - A."""
    labels = list(report["models"])
    sources = [key for key in report["models"][labels[0]] if key != "model"]
    header = f"{'':<24}" + "".join(f" {label + ' accuracy [95% CI]':>23}" for label in labels)
    paired = report.get("paired")
    if paired:
        header += f" {'B - A [95% CI]':>25} {'sign p':>8}"
    rows = [header]
    for source in sources:
        row = f"{source:<24}"
        for label in labels:
            result = report["models"][label][source]
            low, high = result["accuracy_ci95"]
            row += f" {result['accuracy']:>8.3f} [{low:.3f}, {high:.3f}]"
        if paired:
            test = paired[source]
            low, high = test["difference_ci95"]
            row += f" {test['difference']:>+8.3f} [{low:+.3f}, {high:+.3f}] {test['sign_test_p']:>8.3g}"
        rows.append(row)
    return "\n".join(rows)


def main(arguments: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if arguments is None else arguments
    if any(a in ("-h", "--help", "help") for a in arguments):
        print(__doc__)
        return 0
    try:
        options = parse(arguments)
        report = run(options)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(report), flush=True)
    if options["out"]:
        with open(options["out"], "w") as handle:
            json.dump(report, handle, indent=1)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
