"""Random legal games per second through the full text path, against TextArena.

Both sides do the same work per turn: render the prompt of the player to move, pick a
uniformly random legal action, write it as raw model output, and have the env parse it.
Ours: `envs.make(game)` (PettingZoo AEC), answers as ``\\boxed{[action]}``. TextArena,
answering ``[action]``, in two set-ups: its default id (e.g. ``TicTacToe-v0``, with the
LLM observation wrapper) made fresh for every game, because a reused wrapped env keeps
every past game's observations and slows down game after game; and its ``-raw`` id (no
wrappers, no prompt rendering) reused across games, its fastest path. The ratio is
against the faster of the two. Kuhn Poker is compared at 3 hands, TextArena's default
number of rounds.

    python -m benchmarks.env_throughput [--seconds 3] [--repeats 5]

Prints one JSON line per game: games/s (median over repeats) for both and the ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import envs

GAMES = {
    # our env id and kwargs, TextArena id
    "tic_tac_toe": ({}, "TicTacToe-v0"),
    "kuhn_poker": ({"hands": 3}, "KuhnPoker-v0"),
}


def play_ours(env, rng: random.Random, seed: int) -> None:
    """One random game through prompt rendering and answer parsing."""
    env.reset(seed=seed)
    while env.agents:
        agent = env.agent_selection
        if env.terminations[agent] or env.truncations[agent]:
            env.step(None)
            continue
        observation = env.observe(agent)
        env.step("\\boxed{" + rng.choice(observation["legal_actions"]) + "}")


def _textarena_legal(env) -> list[str]:
    game_state = env.state.game_state
    if "board" in game_state:  # TicTacToe: empty cells
        board = game_state["board"]
        return [f"[{3 * r + c}]" for r in range(3) for c in range(3) if board[r][c] == ""]
    return [f"[{move}]" for move in game_state["current_legal_action_tree"]]


def play_textarena(env, rng: random.Random, seed: int) -> None:
    if isinstance(env, str):  # an id: a fresh env for this game
        import textarena

        env = textarena.make(env)
    env.reset(num_players=2, seed=seed)
    done = False
    while not done:
        env.get_observation()
        done, _ = env.step(rng.choice(_textarena_legal(env)))
    env.close()


def games_per_second(play, env, seconds: float, seed: int) -> float:
    rng = random.Random(seed)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        play(env, rng, seed + count)
        count += 1
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per side (median)")
    parser.add_argument("--games", nargs="*", default=list(GAMES), choices=list(GAMES))
    args = parser.parse_args(argv)
    try:
        import textarena
    except ImportError:
        textarena = None
    for name in args.games:
        kwargs, textarena_id = GAMES[name]
        ours_env = envs.make(name, mode="direct", **kwargs)
        peers = {}
        if textarena is not None:
            peers = {"textarena": textarena_id, "textarena_raw": textarena.make(textarena_id + "-raw")}
        ours, theirs = [], {peer: [] for peer in peers}
        for repeat in range(args.repeats):  # interleaved, so machine noise hits every side
            ours.append(games_per_second(play_ours, ours_env, args.seconds, seed=repeat))
            for peer, env in peers.items():
                theirs[peer].append(games_per_second(play_textarena, env, args.seconds, seed=repeat))
        result = {
            "benchmark": "env_throughput",
            "game": name,
            "params": kwargs,
            "games_per_s": round(statistics.median(ours), 1),
            "textarena_id": textarena_id,
        }
        for peer, values in theirs.items():
            result[f"{peer}_games_per_s"] = round(statistics.median(values), 1)
        if theirs:
            fastest = max(statistics.median(values) for values in theirs.values())
            result["ratio_vs_textarena"] = round(statistics.median(ours) / fastest, 2)
        else:
            result["ratio_vs_textarena"] = None
        result.update(repeats=args.repeats, seconds_each=args.seconds)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
