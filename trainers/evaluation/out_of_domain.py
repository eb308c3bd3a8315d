"""Out-of-domain evaluation: SPIRAL's protocol on games the policy never trained on.

SPIRAL asks whether self-play on a few games makes a better player of games it never
saw: it plays the checkpoint against fixed opponents in both seats on an out-of-domain
set and tracks those win rates during training. `SPIRAL_OOD` is that set as this suite
has it (TextArena's Pig Dice, Liar's Dice, Snake and Truth-and-Deception, OpenSpiel's
Nim), `ood_outcomes` plays it game by game (the same seeds for every checkpoint, so
two checkpoints meet the same deals and dice: a paired comparison), `evaluate_ood`
summarises it with 95% intervals, and `paired_comparison` compares two checkpoints.
Reasoning transfer (problems no game teaches: seeded reasoning-gym families or a local
file, scored exactly) is here too, for `benchmarks.transfer` and training's `eval_transfer`.

Games are played in free text (``direct`` by default): TextArena's moves cannot be
listed, so choice mode does not apply to them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import re
from dataclasses import dataclass
from typing import Callable

import envs
from trainers.evaluation.evaluate import summarize
from trainers.rollouts.policy import LanguagePolicy
from trainers.rollouts.play import GameSetup, play_games
from trainers.run.seeds import derive_seed

SPIRAL_OOD = (
    "textarena:PigDice-v0-short",
    "textarena:LiarsDice-v0",
    "openspiel:nim",
    "textarena:Snake-v0",
    "textarena:TruthAndDeception-v0",
)
PRESETS = {"spiral_ood": SPIRAL_OOD}
OOD_TURN_LIMIT = 50
"""SPIRAL cuts games at 50 turns as a draw."""


OOD_EVALUATION = "ood_evaluation"
"""The seed stream of out-of-domain evaluation in training (``trainers.run.seeds``)."""
OOD_OPPONENTS = ("random",)
"""The opponent training evaluates out of domain against, as SPIRAL does."""


def preset_envs(name: str) -> tuple[str, ...]:
    if name not in PRESETS:
        raise ValueError(f"unknown game preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def expand_env_ids(names) -> list[str]:
    """Env ids with presets (``spiral_ood``) replaced by their games, each id once, in order."""
    ids: list[str] = []
    for name in names:
        for env_id in preset_envs(name) if name in PRESETS else (name,):
            if env_id not in ids:
                ids.append(env_id)
    return ids


def check_ood_envs(names, *, mode: str = "direct") -> list[str]:
    """The expanded env ids of `eval_envs`, each made once in `mode` to prove it can be played;
    ValueError naming the bad id and the valid ones (registered envs, library games, presets)."""
    ids = expand_env_ids(names)
    for env_id in ids:
        try:
            spec = envs.spec(env_id)
        except ValueError as error:
            raise ValueError(f"eval_envs: {error}; or a preset: {', '.join(PRESETS)}") from None
        if spec.kind != "game":
            raise ValueError(f"eval_envs={env_id!r} is a task; eval_envs plays games against a random opponent")
        try:
            env_maker(env_id, mode=mode)()
        except (ValueError, ImportError, ModuleNotFoundError) as error:
            raise ValueError(f"eval_envs={env_id!r} cannot be played in mode={mode}: {error}") from None
    return ids


@dataclass(frozen=True)
class Outcome:
    """One evaluation game, keyed so that two checkpoints' games pair up."""

    env_id: str
    opponent: str
    seat: int
    index: int
    value: float
    """The evaluated policy's return."""
    invalid: bool

    @property
    def key(self) -> tuple:
        return (self.env_id, self.opponent, self.seat, self.index)

    @property
    def score(self) -> float:
        """Win 1, draw 0.5, loss 0."""
        return 1.0 if self.value > 0 else 0.0 if self.value < 0 else 0.5


def env_maker(env_id: str, *, mode: str = "direct", invalid_action_policy: str = "forfeit", turn_limit: int = OOD_TURN_LIMIT, **env_kwargs):
    """A function making fresh envs of `env_id` for evaluation."""
    return functools.partial(
        envs.make, env_id, mode=mode, invalid_action_policy=invalid_action_policy, turn_limit=turn_limit, **env_kwargs
    )


def ood_outcomes(
    policy: LanguagePolicy,
    env_ids,
    opponents: dict,
    *,
    games: int,
    seed: int,
    temperature: float | None = None,
    make_env=env_maker,
) -> list[Outcome]:
    """`games` games per env, opponent and seat; `opponents` maps a name to a fixed
    opponent's name or a frozen `LanguagePolicy`. Seeds depend on (seed, env, seat, game)
    only, so every policy evaluated with the same seed meets the same chance."""
    outcomes = []
    for env_index, env_id in enumerate(env_ids):
        make = make_env(env_id)
        probe = make()
        for name, opponent in opponents.items():
            if isinstance(opponent, str):
                from envs.opponents import make_opponent

                opponent = make_opponent(opponent, probe.game)
            for seat in range(probe.game.num_players()):
                base = derive_seed(seed, env_index, seat)
                setups = [
                    GameSetup(env_id, make(), derive_seed(base, i), frozenset({seat}), i) for i in range(games)
                ]
                _, results, _ = play_games(setups, policy, seed=base, opponent=opponent, temperature=temperature)
                outcomes += [
                    Outcome(env_id, name, seat, r.game_id, r.returns[seat], r.invalid[seat] > 0) for r in results
                ]
    return outcomes


def summarize_outcomes(outcomes: list[Outcome]) -> dict:
    """`{"<env>/<opponent>": rates with 95% intervals and "per_seat"}`, and `"all/<opponent>"`
    over every env."""
    groups: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(f"{outcome.env_id}/{outcome.opponent}", []).append(outcome)
        groups.setdefault(f"all/{outcome.opponent}", []).append(outcome)
    summary = {}
    for key, group in groups.items():
        seats = sorted({o.seat for o in group})
        summary[key] = summarize([(o.value, o.invalid) for o in group])
        if not key.startswith("all/"):
            summary[key]["per_seat"] = {
                str(s): summarize([(o.value, o.invalid) for o in group if o.seat == s]) for s in seats
            }
    return summary


def evaluate_ood(policy: LanguagePolicy, env_ids=SPIRAL_OOD, *, games: int, seed: int, opponents=("random",), **options) -> dict:
    """What training records at an evaluation step: `summarize_outcomes` of the OOD set."""
    return summarize_outcomes(
        ood_outcomes(policy, env_ids, {name: name for name in opponents}, games=games, seed=seed, **options)
    )


def paired_comparison(before: list[Outcome], after: list[Outcome]) -> dict:
    """Score difference after - before over the games both played (same env, opponent,
    seat and seed): `paired_scores` of the games' scores (win 1, draw 0.5, loss 0)."""
    try:
        return paired_scores({o.key: o.score for o in before}, {o.key: o.score for o in after})
    except ValueError:
        raise ValueError("the two evaluations share no game to pair (different envs, opponents or seeds?)") from None


def paired_scores(before: dict, after: dict) -> dict:
    """Paired difference after - before of scores keyed by what was scored (a game, a task
    item), over the keys both have: mean with a 95% interval (normal approximation of the
    paired differences) and the two-sided exact sign test's p-value."""
    keys = [key for key in after if key in before]
    if not keys:
        raise ValueError("the two evaluations share nothing to pair")
    differences = [after[key] - before[key] for key in keys]
    n = len(differences)
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(variance / n)
    better, worse = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    return {
        "pairs": n,
        "score_before": sum(before[key] for key in keys) / n,
        "score_after": sum(after[key] for key in keys) / n,
        "difference": mean,
        "difference_ci95": [mean - half, mean + half],
        "better": better,
        "worse": worse,
        "sign_test_p": sign_test(better, worse),
    }


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact sign test (ties dropped): P(a split at least this uneven | p = 1/2)."""
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(better, worse) + 1)) / 2**n
    return min(1.0, 2 * tail)


# ---- reasoning transfer: problems no game teaches (benchmarks.transfer, eval_transfer) ----

TRANSFER_PROMPTS = {
    "think": "Reason step by step, then give the final answer inside \\boxed{}.",
    "direct": "Give only the final answer inside \\boxed{}. Do not explain.",
}
TRANSFER_FAMILY = "basic_arithmetic"
"""The family training's before/after transfer row uses (`eval_transfer`)."""


@dataclass(frozen=True)
class Item:
    """One problem: `key` pairs it across models; `score` maps a reply to 1 (correct) or 0."""

    source: str
    index: int
    question: str
    answer: str
    score: Callable[[str], float]

    @property
    def key(self) -> tuple[str, int]:
        return (self.source, self.index)


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in `text` (nested braces kept), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for position in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth < 0:
            return text[begin:position].strip()
    return None


NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def final_answer(text: str) -> str | None:
    """What a reply answers: its last ``\\boxed{}``, else its final number, else None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    numbers = NUMBER.findall(text)
    return numbers[-1] if numbers else None


def normalize(answer: str) -> str:
    """Forgiving about form only: spaces, ``$``, ``\\text{}``, a trailing period, thousands commas."""
    answer = re.sub(r"\\text\{([^}]*)\}", r"\1", answer.strip().strip("$").strip())
    answer = answer.rstrip(".").replace(" ", "")
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", answer)


def exact_match(reply: str, expected: str) -> float:
    """1 when the reply's final answer equals `expected` (numbers as numbers), else 0."""
    given = final_answer(reply)
    if given is None:
        return 0.0
    given, expected = normalize(given), normalize(last_boxed(expected) or expected)
    if given == expected:
        return 1.0
    try:
        return float(math.isclose(float(given), float(expected), rel_tol=1e-9, abs_tol=1e-9))
    except ValueError:
        return 0.0


@contextlib.contextmanager
def global_random_kept():
    """Restore Python's global `random` state afterwards, whatever the code inside did to it."""
    state = random.getstate()
    try:
        yield
    finally:
        random.setstate(state)


def reasoning_gym_items(family: str, *, count: int, seed: int) -> list[Item]:
    """`count` seeded problems of a reasoning-gym family, scored by the family's scorer."""
    try:
        with global_random_kept():
            import reasoning_gym
    except ImportError:
        raise ValueError(
            "tasks= needs reasoning-gym: pip install 'selfplay-suite[transfer]' (or give data=FILE.jsonl)"
        ) from None
    from reasoning_gym.factory import DATASETS

    if family not in DATASETS:
        raise ValueError(f"tasks: unknown reasoning-gym family {family!r}; for example basic_arithmetic, chain_sum, "
                         f"knights_knaves (all {len(DATASETS)}: reasoning_gym.factory.DATASETS)")
    with global_random_kept():  # reasoning-gym reseeds Python's global `random`; a run's must not move
        dataset = reasoning_gym.create_dataset(family, seed=seed, size=count)
        entries = [dataset[index] for index in range(count)]
    items = []
    for index, entry in enumerate(entries):

        def score(reply, entry=entry):
            answer = final_answer(reply)
            with global_random_kept():
                return float(answer is not None and dataset.score_answer(answer, entry) >= 1.0)

        items.append(Item(family, index, entry["question"], str(entry["answer"]), score))
    return items


def file_items(path: str) -> list[Item]:
    """The rows of a JSONL file of ``{"question", "answer"}`` objects, scored by `exact_match`."""
    items = []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as error:
        raise ValueError(f"data={path!r} cannot be read: {error.strerror or error}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"data={path!r} line {number}: not a JSON object") from None
        if not isinstance(row, dict) or not {"question", "answer"} <= set(row):
            raise ValueError(f'data={path!r} line {number}: expected an object with "question" and "answer"')
        answer = str(row["answer"])
        items.append(Item("data", len(items), str(row["question"]), answer, lambda reply, answer=answer: exact_match(reply, answer)))
    if not items:
        raise ValueError(f"data={path!r} has no rows")
    return items


def transfer_messages(item: Item, prompt: str) -> list[dict]:
    """The chat messages asking `item`'s question, with the `TRANSFER_PROMPTS[prompt]` instruction."""
    return [{"role": "user", "content": f"{item.question}\n\n{TRANSFER_PROMPTS[prompt]}"}]


def transfer_accuracy(policy: LanguagePolicy, *, count: int, seed: int, prompt: str = "direct") -> dict:
    """Greedy accuracy on `count` seeded `TRANSFER_FAMILY` problems with its 95% Wilson interval."""
    from trainers.evaluation.evaluate import wilson_interval

    items = reasoning_gym_items(TRANSFER_FAMILY, count=count, seed=seed)
    decisions = policy.act([transfer_messages(item, prompt) for item in items], seed=seed, temperature=0.0)
    correct = sum(item.score(decision.text) for item, decision in zip(items, decisions))
    low, high = wilson_interval(round(correct), count)
    return {"items": count, "accuracy": correct / count, "accuracy_ci95": [round(low, 4), round(high, 4)]}
