"""Does a negotiating model accept the offers that put it ahead, and refuse the others?

Simple Negotiation is won by the larger gain, so an offer made to a player is worth
accepting exactly when the trade raises that player's score margin. A policy that accepts
everything or nothing draws or loses to a random trader; one that tells the two apart
wins. Win rates mix this with everything else a game holds; this report isolates it: at
`states` positions reached by seeded random play, each with an offer pending to the player
to move that changes the margin, the model's exact probability of ``[Accept]`` (choice
mode, `LanguagePolicy.action_probabilities_of`), averaged over the offers that would put
it ahead (``favourable``) and over those that would set it back (``unfavourable``); and
where the rest goes: ``deny`` and ``counter_offer`` (any offer of its own, which denies
implicitly), averaged over all of them. (Untrained SmolLM2 answers 98.6% of such offers
with one of its own.)

    python -m trainers.evaluation.acceptance MODEL ['{"offer_notes": true}'] [--states 40]
"""

from __future__ import annotations

import random

from games.simple_negotiation import ACCEPT, DENY

MAX_TRIES_PER_STATE = 100


def margin_gained(state) -> float:
    """How much accepting the pending offer would change the mover's score margin."""
    player = state.current_player()
    return state.accepted().score_margin(player) - state.score_margin(player)


def offer_positions(game, *, states: int, seed: int) -> list:
    """`states` positions of `game` with an offer pending to the player to move whose
    acceptance changes that player's score margin, reached by seeded random play."""
    if game.max_turns < 2:
        raise ValueError("an offer can only be answered in a game of at least 2 turns")
    rng = random.Random(seed)
    found = []
    for _ in range(MAX_TRIES_PER_STATE * states):
        if len(found) == states:
            break
        state = game.new_initial_state()
        for _ in range(rng.randrange(game.max_turns - 1)):
            state.apply_action(rng.choice(state.legal_actions()))
        if state.pending_offer() is None:  # the player to move makes an offer to the next one
            state.apply_action(rng.choice([a for a in state.legal_actions() if a not in (ACCEPT, DENY)]))
        if not state.is_terminal() and state.pending_offer() is not None and margin_gained(state) != 0:
            found.append(state)
    return found  # fewer than asked only where such offers are rare (tiny max_quantity)


def answers_offers(game) -> bool:
    """Whether any offer in `game` is ever answered: not in a one-turn negotiation."""
    return game.max_turns >= 2


def acceptance_report(policy, env, *, states: int = 40, seed: int = 0, temperature: float = 1.0) -> dict | None:
    """``{"favourable", "unfavourable", "deny", "counter_offer", "states"}``: mean P(accept)
    over the offers that would raise the player's margin and over those that would lower it,
    mean P(deny) and P(a counter-offer) over all of them (where an answer's probability goes
    when it is not an accept), and how many offers of each kind; None in a one-turn game,
    where no offer is ever answered."""
    if not answers_offers(env.game):
        return None
    positions = offer_positions(env.game, states=states, seed=seed)
    prompts = [env.prompt_for(s) for s in positions]
    # one call: accept and deny are options of the same first choice, scored once per prompt
    answers = policy.action_probabilities_of(prompts * 2, [ACCEPT] * len(prompts) + [DENY] * len(prompts), temperature=temperature)
    accepts, denies = answers[:len(prompts)], answers[len(prompts):]
    split: dict[bool, list[float]] = {True: [], False: []}
    for state, probability in zip(positions, accepts):
        split[margin_gained(state) > 0].append(probability)
    mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
    return {
        "favourable": mean(split[True]),
        "unfavourable": mean(split[False]),
        "deny": mean(denies),
        "counter_offer": mean([max(0.0, 1.0 - a - d) for a, d in zip(accepts, denies)]),
        "states": [len(split[True]), len(split[False])],
    }


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    import envs
    from trainers.generation import TransformersBackend
    from trainers.models import load_model
    from trainers.rollouts.policy import LanguagePolicy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a built-in model name, a checkpoint or a model folder")
    parser.add_argument("env_kwargs", nargs="?", default="{}", help="JSON object of simple_negotiation arguments")
    parser.add_argument("--states", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.6)
    args = parser.parse_args(argv)
    env_kwargs = json.loads(args.env_kwargs)
    env = envs.make("simple_negotiation", mode="choice", **env_kwargs)  # before the model: bad arguments fail fast
    if not answers_offers(env.game):
        parser.error("a one-turn negotiation answers no offer: there is no acceptance to report")
    model, tokenizer = load_model(args.model)
    policy = LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode="choice")
    report = acceptance_report(policy, env, states=args.states, seed=args.seed, temperature=args.temperature)
    print(json.dumps({"model": args.model, "env_kwargs": env_kwargs, "temperature": args.temperature, **report}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
