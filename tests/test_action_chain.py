"""Large action sets in choice mode: a turn's legal actions asked as a chain of small choices.

Checked: the trie spells every legal action and nothing else, the prompt describes a chained
turn's actions instead of listing them, the chained distribution is the product of the
model's own per-round softmaxes (computed here from the logits) and sums to 1, a chained
answer's samples are one trace, a Simple Negotiation run trains end to end, Kuhn Poker (2
actions) is untouched, and `choice_chain` is refused by name where it cannot act.
"""

from __future__ import annotations

import copy
import math
import os

import pytest

import envs
from envs import action_chain
from envs.action_chain import ActionChain, describe_actions, segments
from trainers.generation import encode_prompts
from trainers.generation.logprobs import common_prefix_length
from trainers.run.config import TrainConfig, parse_overrides

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_segments_spell_the_action():
    assert segments("[Offer: 3 Wood -> 10 Gold]") == ["[Offer:", " 3", " Wood", " ->", " 10", " Gold]"]
    assert "".join(segments("a  b ")) == "a  b "


@pytest.mark.parametrize("merged_up_to", [1, 32])
def test_the_chain_reaches_every_legal_action_once_and_nothing_else(monkeypatch, merged_up_to):
    monkeypatch.setattr(action_chain, "MERGED_UP_TO", merged_up_to)
    actions = ["[Accept]", "[Deny]", "a b", "a b c", "a d"]
    chain = ActionChain(actions)
    spelled, frontier = [], [()]
    while frontier:
        picks = frontier.pop()
        step = chain.next_options(picks)
        if step is None:
            spelled.append(chain.spell(picks))
            assert actions[chain.action_index(picks)] == chain.spell(picks)
            assert chain.picks_of(chain.spell(picks)) == picks
        else:
            assert len(step[1]) <= max(merged_up_to, 3)  # the root's own three options, however small the cap
            frontier += [picks + (k,) for k in range(len(step[1]))]
    assert sorted(spelled) == sorted(actions)
    if merged_up_to == 1:  # every choice asked alone
        assert chain.next_options([]) == ("", ("[Accept]", "[Deny]", "a"))
        assert chain.next_options([2]) == ("a", (" b", " d"))
        assert chain.next_options([2, 0]) == ("a b", ("", " c"))  # "a b" is an action and a prefix
    else:  # the choices below "a" fit in one with the root's
        assert chain.next_options([]) == ("", ("[Accept]", "[Deny]", "a b", "a b c", "a d"))


def test_negotiation_offer_is_two_choices_the_first_merged():
    env = envs.make("simple_negotiation", mode="choice")
    env.reset(seed=0)
    chain = ActionChain(env.turn_prompt().choices)
    assert chain.next_options([]) == ("[Offer:", tuple(f" {n} {r}" for n in range(1, 11) for r in ("Gold", "Wood")))
    assert chain.next_options([5]) == ("[Offer: 3 Wood ->", tuple(f" {n}" for n in range(1, 11)))
    assert chain.spell([5, 4]) == "[Offer: 3 Wood -> 5 Gold]"
    env.step("[Offer: 3 Wood -> 5 Gold]")
    answer = ActionChain(env.turn_prompt().choices)
    assert answer.next_options([])[1][:4] == ("[Accept]", "[Deny]", "[Offer: 1 Gold", "[Offer: 1 Wood")
    assert len(answer.next_options([])[1]) == 22


def test_chained_prompt_describes_the_actions():
    chained = envs.make("simple_negotiation", mode="choice")
    listed = envs.make("simple_negotiation", mode="choice", choice_chain="off")
    for env in (chained, listed):
        env.reset(seed=0)
    prompt, full = chained.turn_prompt(), listed.turn_prompt()
    assert prompt.chained and not full.chained
    assert prompt.choices == full.choices and len(prompt.choices) == 200
    assert "[Offer: N Gold -> M Wood], [Offer: N Wood -> M Gold] (N, M from 1 to 10, at most what each side holds)" in prompt.text
    assert len(prompt.text) < 1000 < 6000 < len(full.text)
    kuhn = envs.make("kuhn_poker", mode="choice")
    kuhn.reset(seed=0)
    assert not kuhn.turn_prompt().chained  # 2 actions: one choice, listed
    direct = envs.make("simple_negotiation", mode="direct")
    direct.reset(seed=0)
    assert not direct.turn_prompt().chained  # chains are a choice-mode answer


def test_chained_prompt_puts_the_patterns_before_the_observation_so_turns_share_them():
    env = envs.make("simple_negotiation", mode="choice")
    env.reset(seed=0)
    first = env.turn_prompt().text
    env.step(env.turn_prompt().action_ids[5])
    second = env.turn_prompt().text  # the other player, an offer pending: Accept and Deny too
    rules_end = first.index("equal gains are a draw.") + len("equal gains are a draw.")
    for text in (first, second):
        answer, actions, observation = (text.index(part) for part in ("Reply with", "Legal actions:", "You are Player"))
        assert rules_end < answer < actions < observation
    shared = len(os.path.commonprefix([first, second]))
    assert first[:shared].endswith("Legal actions: [")  # everything up to the actions is shared
    env.step(env.turn_prompt().choices.index("[Accept]"))
    env.step(env.turn_prompt().action_ids[5])  # after a trade: the same actions line in the game's own words
    traded = env.turn_prompt().text
    assert "(gain +0)" not in traded and second[: second.index("You are Player")] == traded[: traded.index("You are Player")]
    listed = envs.make("simple_negotiation", mode="choice", choice_chain="off")
    listed.reset(seed=0)
    full = listed.turn_prompt().text
    assert full.index("You are Player") < full.index("Legal actions:") < full.index("Reply with")


def test_describe_actions_lists_what_is_not_a_full_product():
    assert describe_actions(["[x 1 y 2]", "[x 2 y 2]", "[x 1 y 3]"]) == "[x 1 y 2], [x 2 y 2], [x 1 y 3]"
    assert describe_actions(["[x 1]", "[x 3]", "[stop]"]) == "[x N] (N one of 1, 3), [stop]"


@pytest.fixture(scope="module")
def tiny():
    from trainers.generation import TransformersBackend
    from trainers.models import load_model
    from trainers.rollouts.policy import LanguagePolicy

    model, tokenizer = load_model("tiny-random", seed=0)
    return LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode="choice")


def _sequence_logprob(model, prompt_ids: list[int], continuation: list[int]) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + continuation])).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
    return float(logprobs.gather(1, torch.tensor(continuation)[:, None]).sum())


def test_chained_distribution_is_the_product_of_the_models_softmaxes(tiny):
    from trainers.generation import encode_choice, encode_prompts

    env = envs.make("simple_negotiation", mode="choice", max_quantity=3)
    env.reset(seed=0)
    env.step("[Offer: 1 Wood -> 2 Gold]")
    prompt = env.turn_prompt()  # Accept, Deny and 18 offers
    assert prompt.chained and len(prompt.choices) == 20
    distribution = tiny.action_distributions([prompt])[0]
    assert set(distribution) == set(prompt.action_ids)
    assert sum(distribution.values()) == pytest.approx(1.0, abs=1e-9)

    model, tokenizer = tiny.backend.model, tiny.tokenizer
    prompt_ids = encode_prompts(tokenizer, [prompt.messages()])[0]
    chain = ActionChain(prompt.choices)

    def by_hand(action: str) -> float:
        probability, picks = 1.0, []
        while (step := chain.next_options(picks)) is not None:
            text, options = step
            scores = [_sequence_logprob(model, prompt_ids, encode_choice(tokenizer, text + o)) for o in options]
            rest = action[len(text):]
            pick = next(k for k, o in enumerate(options) if rest.startswith(o) and rest[len(o):len(o) + 1] in ("", " "))
            probability *= torch.softmax(torch.tensor(scores, dtype=torch.float64), 0)[pick].item()
            picks.append(pick)
        assert chain.spell(picks) == action
        return probability

    for action_id, action in zip(prompt.action_ids, prompt.choices):
        assert distribution[action_id] == pytest.approx(by_hand(action), rel=1e-4)


def test_a_chained_answer_is_one_trace_with_the_sampled_probability(tiny):
    from trainers.learning.samples import TRACE_KEY

    env = envs.make("simple_negotiation", mode="choice")
    env.reset(seed=0)
    prompt = env.turn_prompt()
    decision = tiny.act([prompt], seed=3)[0]
    assert decision.text == prompt.choices[decision.choice_index]
    assert len(decision.parts) == 2 and [len(p.choice_ids) for p in decision.parts] == [20, 10]
    distribution = tiny.action_distributions([prompt])[0]
    assert math.exp(decision.old_logprobs[0]) == pytest.approx(distribution[prompt.action_ids[decision.choice_index]], rel=1e-4)
    samples = decision.samples("simple_negotiation", 0, 7, name="g/7/0", info={"state_key": "k"}, answer_info={"action": decision.text})
    assert [s.info["chunk_index"] for s in samples] == [0, 1]
    assert {s.info[TRACE_KEY] for s in samples} == {"g/7/0"} and {s.loss_tokens for s in samples} == {2}
    assert samples[0].info["action"] == decision.text and "action" not in samples[1].info


def test_answers_in_parts_are_the_same_with_the_prompt_run_once(tiny):
    """The transformers backend runs each distinct prompt once for all of a chain's rounds
    (`choice_session`); every part's choice and log-prob is what scoring the whole prompt
    again each round gives."""
    from trainers.rollouts.policy import LanguagePolicy

    class WholePrompts:  # the backend without its session: each round scores prompt + candidates
        def __init__(self, backend):
            self.score_choices = backend.score_choices

    calls = []
    backend = tiny.backend
    session_of = backend.choice_session
    backend.choice_session = lambda prompts, **kw: calls.append(len(prompts)) or session_of(prompts, **kw)
    try:
        prompts = []
        for wood in range(1, 4):
            env = envs.make("simple_negotiation", mode="choice")
            env.reset(seed=0)
            env.step(f"[Offer: {wood} Wood -> 1 Gold]")
            prompts += [env.turn_prompt()] * 2  # a repeated prompt runs once
        with_session = tiny.act(prompts, seed=5)
    finally:
        del backend.choice_session
    whole = LanguagePolicy(WholePrompts(backend), tiny.tokenizer, mode="choice").act(prompts, seed=5)
    assert calls == [3]
    for a, b in zip(with_session, whole):
        assert a.text == b.text and [p.choice_index for p in a.parts] == [p.choice_index for p in b.parts]
        assert a.old_logprobs[0] == pytest.approx(b.old_logprobs[0], abs=1e-4)
    with pytest.raises(IndexError, match="prompt indices"):
        backend.choice_session([prompts[0].messages()]).score_choices([1], [["[Accept]"]])


def test_a_session_batches_prompts_that_share_a_prefix_each_behind_its_own_run_once(tiny):
    """`choice_session` runs every prompt's common prefix (chat template and rules) once; its
    batches hold prompts that agree further (two games at the same turn, offers pending that
    differ in their amounts), and each batch runs what its prompts share beyond the rules
    once too. The scores are what scoring each whole prompt gives."""
    from trainers.generation import TransformersBackend

    backend = TransformersBackend(tiny.backend.model, tiny.tokenizer)  # no earlier session's prefix to continue
    env = envs.make("simple_negotiation", mode="choice")
    prompts = []
    for opening in ["[Offer: 1 Wood -> 1 Gold]", "[Offer: 2 Gold -> 3 Wood]"]:  # answered at the same turn
        env.reset(seed=0)
        env.step(opening)
        prompts.append(env.turn_prompt().messages())
    env.reset(seed=0)
    for move in ["[Offer: 1 Wood -> 1 Gold]", "[Deny]"]:
        env.step(move)
    prompts.append(env.turn_prompt().messages())  # another turn, the other player: agrees on the rules only
    ids = encode_prompts(tiny.tokenizer, prompts)
    rules, pending = common_prefix_length(ids), common_prefix_length(ids[:2])
    assert rules > 50 and pending > rules + 20
    widths = []
    hook = backend.model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        session = backend.choice_session(prompts, batch_size=2)
    finally:
        hook.remove()
    assert widths[0] == (1, rules)  # the rules, once
    assert sorted(widths[1:]) == sorted([
        (1, len(ids[2]) - rules),  # the other turn's prompt, a batch alone
        (1, pending - rules),  # the two offers' common part, once
        (2, max(len(ids[0]), len(ids[1])) - pending),  # then each offer's own rest
    ])
    choices = [["[Accept]", "[Deny]", "[Offer: 3"], ["[Offer: 3 Wood", "[Offer: 3 Gold"], ["[Offer: 1", "[Offer: 10"]]
    got = session.score_choices([0, 1, 2], choices)
    whole = backend.score_choices(prompts, choices)
    for a, b in zip(got, whole):
        assert a == pytest.approx(b, abs=1e-4)


def _round_prompts(histories: list[list[str]]) -> list[list[dict]]:
    env = envs.make("simple_negotiation", mode="choice")
    prompts = []
    for moves in histories:
        env.reset(seed=0)
        for move in moves:
            env.step(move)
        prompts.append(env.turn_prompt().messages())
    return prompts


def test_a_session_continues_the_last_sessions_prefix_within_a_block_of_fixed_weights(tiny):
    """A rollout opens a session per round of turns; within `reusing_prefixes` each starts
    from the prefix the last one ran (rules, answer format, action patterns) instead of
    running it again; a new block (new weights) runs it afresh. The scores are what scoring
    each whole prompt gives."""
    from trainers.generation import TransformersBackend

    model = copy.deepcopy(tiny.backend.model)
    backend = TransformersBackend(model, tiny.tokenizer)
    first_round = _round_prompts([["[Offer: 1 Wood -> 1 Gold]"], ["[Offer: 2 Gold -> 3 Wood]"]])
    second_round = _round_prompts([["[Offer: 1 Wood -> 1 Gold]", "[Accept]"], ["[Offer: 2 Gold -> 3 Wood]", "[Accept]"]])
    ids = encode_prompts(tiny.tokenizer, first_round + second_round)
    shared = common_prefix_length(ids)
    assert shared > 50 and common_prefix_length(ids[2:]) >= shared
    starts = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: starts.append(int(kwargs["position_ids"][0, 0])), with_kwargs=True)
    offers = [" 1", " 10"]
    try:
        with backend.reusing_prefixes():
            backend.choice_session(first_round)
            assert starts[0] == 0  # the block's first session runs its prefix from the start
            starts.clear()
            session = backend.choice_session(second_round)
            assert starts and min(starts) >= shared  # the second runs nothing the first one ran
            got = session.score_choices([0, 1], [[f"[Offer:{o}" for o in offers]] * 2)
            before = got[0]
        assert got == [pytest.approx(b, abs=1e-4) for b in backend.score_choices(second_round, [[f"[Offer:{o}" for o in offers]] * 2)]
        with torch.no_grad():
            model.model.embed_tokens.weight.mul_(1.5)  # what an update does between two rollouts
        starts.clear()
        with backend.reusing_prefixes():
            session = backend.choice_session(second_round)
            assert starts[0] == 0  # a new block: the prefix is run again
        starts.clear()
        backend.choice_session(second_round)
        assert starts[0] == 0  # outside a block nothing is reused
    finally:
        hook.remove()
    after = session.score_choices([0], [[f"[Offer:{o}" for o in offers]])[0]
    assert after == pytest.approx(backend.score_choices(second_round[:1], [[f"[Offer:{o}" for o in offers]])[0], abs=1e-4)
    assert after != pytest.approx(before, abs=1e-3)


def test_a_rollout_runs_the_shared_prefix_once_not_once_a_round(tiny):
    from trainers.rollouts.play import GameSetup, play_games

    setups = [GameSetup("simple_negotiation", envs.make("simple_negotiation", max_turns=6, mode="choice"), seed=s,
                        learner_seats=frozenset({0, 1}), game_id=s) for s in range(3)]
    starts = []
    hook = tiny.backend.model.register_forward_pre_hook(lambda module, args, kwargs: starts.append(int(kwargs["position_ids"][0, 0])), with_kwargs=True)
    try:
        samples, _, timing = play_games(setups, tiny, seed=0, temperature=5.0)
    finally:
        hook.remove()
    assert len({s.game_id for s in samples}) == 3 and len({s.info.get("state_key") for s in samples}) > 6
    # the first round's three games share one prompt (run whole); the second round's session
    # runs the rules once; every later round continues it
    assert starts.count(0) == 2


def test_a_chained_negotiation_run_trains_end_to_end(tmp_path):
    from trainers.selfplay import main

    out = tmp_path / "run"
    assert main(["model=tiny-random", "env=simple_negotiation", "steps=1", "games_per_step=2", "eval_games=2",
                 "eval_opponents=random", "tensorboard=false", "progress=false", "threads=1", f"out={out}"]) == 0
    assert (out / "metrics.jsonl").read_text().strip()


def test_rollout_turns_are_traces(tiny):
    from trainers.learning.advantages import trace_advantages
    from trainers.learning.samples import TRACE_KEY
    from trainers.rollouts.play import GameSetup, play_games

    env = envs.make("simple_negotiation", mode="choice", max_turns=3)
    samples, results, _ = play_games([GameSetup("simple_negotiation", env, seed=0, learner_seats=frozenset({0, 1}))], tiny, seed=1)
    traces: dict = {}
    for sample in samples:
        traces.setdefault(sample.info[TRACE_KEY], []).append(sample)
    assert len(traces) == results[0].turns == 3
    for parts in traces.values():
        assert parts[0].info["action"] in parts[0].info["choices"]
        assert {s.loss_tokens for s in parts} == {len(parts)}
    trace_advantages(samples, "action_centered")  # choice mode's default: reads the first part's action
    for parts in traces.values():
        assert len({s.advantage for s in parts}) == 1


def test_kuhn_exploitability_is_the_same_with_chains_on_or_off(tiny):
    from trainers.evaluation.evaluate import model_exploitability

    on, _ = model_exploitability(tiny, envs.make("kuhn_poker", mode="choice"))
    off, _ = model_exploitability(tiny, envs.make("kuhn_poker", mode="choice", choice_chain="off"))
    assert on == off


def test_choice_chain_refusals_name_the_key(tmp_path):
    from trainers.backends.openrlhf.launcher import refuse_unmapped_keys
    from trainers.run.preflight import preflight

    with pytest.raises(ValueError, match="choice_chain"):
        parse_overrides(["choice_chain=always"])
    base = ["model=tiny-random", f"out={tmp_path / 'run'}"]
    with pytest.raises(ValueError, match="choice_chain=off sets how choice-mode game turns are asked; this run has mode=direct"):
        preflight(parse_overrides([*base, "env=simple_negotiation", "mode=direct", "choice_chain=off"]))
    with pytest.raises(ValueError, match="no game env"):
        preflight(parse_overrides([*base, "env=sat", "choice_chain=off"]))
    with pytest.raises(ValueError, match="choice_chain='off'"):
        refuse_unmapped_keys(TrainConfig(backend="openrlhf", env=["simple_negotiation"], choice_chain="off"))


def test_describe_actions_shares_a_range_note_between_neighbouring_patterns():
    offers = lambda give, get, gives, gets: [f"[{give} {n} -> {get} {m}]" for n in gives for m in gets]  # noqa: E731
    assert describe_actions(offers("W", "G", range(1, 4), range(1, 4)) + offers("G", "W", range(1, 4), range(1, 4))) == \
        "[W N -> G M], [G N -> W M] (N, M from 1 to 3)"
    uneven = offers("W", "G", range(1, 4), range(1, 6)) + offers("G", "W", range(1, 6), range(1, 4))
    assert describe_actions(uneven) == "[W N -> G M] (N from 1 to 3; M from 1 to 5), [G N -> W M] (N from 1 to 5; M from 1 to 3)"
    apart = offers("W", "G", range(1, 3), range(1, 3)) + ["[stop]"] + offers("G", "W", range(1, 3), range(1, 3))
    assert describe_actions(apart) == "[W N -> G M] (N, M one of 1, 2), [stop], [G N -> W M] (N, M one of 1, 2)"


def test_picks_of_inverts_spell():
    chain = ActionChain(["[Accept]", "[Deny]", "[Offer: 1 Gold -> 1 Wood]", "[Offer: 1 Gold -> 10 Wood]", "[Offer: 10 Gold -> 1 Wood]", "[Go]", "[Go] on"])
    for action in chain.actions:
        assert chain.spell(chain.picks_of(action)) == action
    with pytest.raises(ValueError, match="not one of this chain's actions"):
        chain.picks_of("[Offer: 2 Gold -> 1 Wood]")


def test_the_probability_of_one_action_is_its_entry_in_the_whole_distribution(tiny):
    import random

    rng = random.Random(0)
    env = envs.make("simple_negotiation", mode="choice", max_quantity=3, max_turns=4)
    prompts, actions = [], []
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(seed):
            env.step(rng.choice(env.turn_prompt().choices))
        prompt = env.turn_prompt()
        assert prompt.chained
        for action in (prompt.action_ids[0], prompt.action_ids[-1], rng.choice(prompt.action_ids)):
            prompts.append(prompt)
            actions.append(action)
    kuhn = envs.make("kuhn_poker", mode="choice")
    kuhn.reset(seed=0)
    prompts.append(kuhn.turn_prompt())
    actions.append(kuhn.turn_prompt().action_ids[1])
    whole = tiny.action_distributions(prompts, temperature=0.7)
    assert tiny.action_probabilities_of(prompts, actions, temperature=0.7) == pytest.approx([d[a] for d, a in zip(whole, actions)], rel=1e-6)
