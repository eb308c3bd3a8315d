"""What game turns are trained on: the outcome (default) or the score margin to the end
(reward=margin, turn_margin), and how a turn's choices are credited (game_credit).

game_credit=counterfactual is checked against the game replayed move by move and the
model's own action distribution: an answer to a pending trade carries
``Q(chosen) - sum pi Q`` with Q(accept) the trade's worth and Q(deny) = Q(any offer) = 0,
no other choice carries a gap, and the trainer credits the gapped choices by gap / std
while every other sample keeps its turn's credit."""

import json

import pytest

import envs
from envs import action_chain
import games
from envs.opponents import make_opponent
from games.simple_negotiation import ACCEPT
from trainers.learning.samples import TurnSample
from trainers.rollouts.decision_credit import DECISION_GAP_KEY, DECISION_REGRET_KEY, decision_gaps, immediate_margin_changes
from trainers.rollouts.rewards import MARGIN_KEY, assign_rewards, has_margin
from trainers.run.config import TrainConfig, parse_overrides
from trainers.selfplay import main


@pytest.fixture(scope="module")
def tiny():
    from trainers.generation import TransformersBackend
    from trainers.models import load_model
    from trainers.rollouts.policy import LanguagePolicy

    model, tokenizer = load_model("tiny-random", seed=0)
    return LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode="choice")


def _margins_before_each_turn(game, history):
    """{player: [margin before each of that player's turns, in order]}, replayed from the moves."""
    state, before = game.new_initial_state(), {0: [], 1: []}
    for action in history:
        player = state.current_player()
        before[player].append(state.score_margin(player))
        state.apply_action(action)
    return before, state


def _turn(sample):
    """A turn's key: a chained turn's part samples share one trace; an unchained turn is one sample."""
    from trainers.learning.samples import TRACE_KEY

    return sample.info.get(TRACE_KEY, id(sample))


def _negotiation_setups(max_turns, mode="think"):
    """Two self-play games and four against the rule (which offers trades the model may accept);
    ``mode="choice"`` chains the turns as a choice-mode run does."""
    from trainers.rollouts.play import GameSetup

    rule = make_opponent("rule_based", games.load("simple_negotiation"))
    return [GameSetup("simple_negotiation", envs.make("simple_negotiation", max_turns=max_turns, mode=mode), seed=s,
                      learner_seats=frozenset({0, 1} if s < 2 else {s % 2}), game_id=s,
                      opponent=None if s < 2 else rule, opponent_name="rule_based") for s in range(6)]


def _turns_of(samples, game_id, player):
    """The keys of `player`'s turns in game `game_id`, in order (a chained turn's part samples share one)."""
    turns = []
    for sample in samples:
        if sample.game_id == game_id and sample.role == player and _turn(sample) not in turns:
            turns.append(_turn(sample))
    return turns


def test_margin_reward_is_each_turns_margin_to_the_end_and_results_keep_the_outcome(tiny):
    from trainers.rollouts.play import play_games

    margin_setups = _negotiation_setups(max_turns=4)
    samples, results, _ = play_games(margin_setups, tiny, seed=1, reward="margin")  # a seed whose games trade
    nonzero = 0
    for setup, result in zip(margin_setups, results):
        before, final = _margins_before_each_turn(setup.env.game, setup.env.state.history())
        assert result.returns == final.returns()  # results report win/draw/loss
        for player in setup.learner_seats:
            # a chained turn is several part samples of one trace; each turn gets its own margin to go
            turns = _turns_of(samples, setup.game_id, player)
            assert len(turns) == len(before[player])
            for turn, margin_before in zip(turns, before[player]):
                for sample in (s for s in samples if _turn(s) == turn):
                    assert sample.info[MARGIN_KEY] == margin_before
                    assert sample.reward == pytest.approx(final.score_margin(player) - margin_before)
                    nonzero += sample.reward != 0
    assert nonzero  # the model accepted some of the rule's offers: trades happened

    # every estimator takes per-turn rewards; the EMA baselines count each turn's reward as a return
    from trainers.learning.advantages import METHODS, AdvantageState, trace_advantages

    for method in METHODS:
        if method != "exact":  # the oracle needs the game tree (refused with reward=margin)
            trace_advantages(samples, method, AdvantageState())
    state = AdvantageState()
    trace_advantages(samples, "rae", state)
    firsts = [s for s in samples if s.info.get("chunk_index", 0) == 0]
    baselines = [state.role_baselines.value(("simple_negotiation", role)) for role in (0, 1)]
    assert baselines != [0.0, 0.0]  # the nonzero margins moved them
    assert len({s.advantage for s in firsts}) > 2  # A = R - b, turn by turn

    for setup, result in zip(margin_setups, results):  # the same games trained on the outcome
        mine = [s for s in samples if s.game_id == setup.game_id]
        assert assign_rewards(setup.env, mine, "outcome") == result.returns
        assert all(s.reward == result.returns[s.role] for s in mine)


def test_turn_margin_credits_each_turn_with_the_change_until_its_players_next_turn(tiny):
    from trainers.rollouts.play import play_games

    setups = _negotiation_setups(max_turns=6)
    samples, results, _ = play_games(setups, tiny, seed=1, reward="turn_margin")
    nonzero = 0
    for setup, result in zip(setups, results):
        before, final = _margins_before_each_turn(setup.env.game, setup.env.state.history())
        assert result.returns == final.returns()
        for player in setup.learner_seats:
            turns = _turns_of(samples, setup.game_id, player)
            assert len(turns) == len(before[player])
            after = before[player][1:] + [final.score_margin(player)]
            rewards = []
            for turn, margin_before, margin_after in zip(turns, before[player], after):
                parts = [s for s in samples if _turn(s) == turn]
                assert all(s.reward == pytest.approx(margin_after - margin_before) for s in parts)
                rewards.append(parts[0].reward)
                nonzero += parts[0].reward != 0
            # the turns' own changes add up to the margin to the end of the first turn (reward=margin's)
            assert sum(rewards) == pytest.approx(final.score_margin(player) - before[player][0])
    assert nonzero  # trades happened, and some turn was credited with one


def test_a_forfeit_keeps_its_penalty_on_top_of_the_margin():
    env = envs.make("simple_negotiation", max_turns=4)
    env.reset(seed=0)
    first = env.turn_prompt()
    sample = TurnSample([1], [2], [0.0], "simple_negotiation", role=0, game_id=0, info={MARGIN_KEY: 0.0})
    env.step(first.choices[0])  # player 0 offers
    reply = TurnSample([1], [2], [0.0], "simple_negotiation", role=1, game_id=0, info={MARGIN_KEY: 0.0})
    env.step("no such move")  # player 1 forfeits (the default invalid-action policy)
    outcome = assign_rewards(env, [sample, reply], "margin")
    assert outcome == [1.0, -1.0]
    # nothing traded (margin 0 to go); the forfeit is the whole outcome
    assert (sample.reward, reply.reward) == (1.0, -1.0)


def test_only_games_with_a_score_margin_have_one():
    assert has_margin(games.load("simple_negotiation"))
    assert not has_margin(games.load("kuhn_poker"))
    assert not has_margin(games.load("tic_tac_toe"))


def test_reward_refusals_name_the_key(tmp_path):
    from trainers.backends.openrlhf.launcher import refuse_unmapped_keys
    from trainers.learning.diagnostics import diagnosis_blocker
    from trainers.run.preflight import preflight

    base = ["model=tiny-random", f"out={tmp_path / 'run'}", "reward=margin"]
    with pytest.raises(ValueError, match=r"reward=margin needs a score margin \(State.score_margin\), which kuhn_poker does not define"):
        preflight(parse_overrides([*base, "env=kuhn_poker"]))
    with pytest.raises(ValueError, match="which tic_tac_toe does not define"):
        preflight(parse_overrides([*base, "env=simple_negotiation,tic_tac_toe"]))
    with pytest.raises(ValueError, match="reward=margin says what game turns are trained on; sat has no game env"):
        preflight(parse_overrides([*base, "env=sat"]))
    with pytest.raises(ValueError, match=r"reward.*outcome.*margin.*turn_margin"):
        parse_overrides(["reward=score"])
    with pytest.raises(ValueError, match="reward='margin'"):
        refuse_unmapped_keys(TrainConfig(backend="openrlhf", env=["simple_negotiation"], reward="margin"))
    blocker = diagnosis_blocker(parse_overrides(["reward=margin"]), games.load("kuhn_poker"))
    assert blocker == "the true advantage is the outcome's, and reward=margin trains on something else"


def test_a_margin_run_trains_and_evaluates_on_the_outcome(tmp_path, monkeypatch):
    import trainers.selfplay as selfplay

    asked = []

    def spy(*args, **kwargs):
        asked.append(kwargs.get("reward", "outcome"))
        return play_games(*args, **kwargs)

    play_games = selfplay.play_games
    monkeypatch.setattr(selfplay, "play_games", spy)
    out = tmp_path / "nego"
    assert main(["model=tiny-random", "env=simple_negotiation", "reward=margin", "advantage=rae", 'env_kwargs={"max_turns": 4, "offer_notes": true}',
                 "steps=1", "samples_per_step=16", "eval_every=1", "eval_games=2", "eval_opponents=random",
                 "threads=1", "progress=false", "tensorboard=false", "save_every=0", f"out={out}"]) == 0
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["phase"] == "rl" and first["samples"] > 0
    assert asked and set(asked) == {"margin"}  # every training rollout (evaluation plays its own games)
    report = json.loads((out / "eval" / "step_00000001.json").read_text())
    assert report["simple_negotiation/random"]["mean_return"] in {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert sum(report["simple_negotiation/acceptance"]["states"]) == 40  # trainers/evaluation/acceptance.py


def test_only_accepting_changes_the_margin_at_once():
    state = games.load("simple_negotiation").new_initial_state()
    state.apply_action(state.legal_actions()[5])  # player 0 offers
    legal = state.legal_actions()
    changes = immediate_margin_changes(state, 1, legal)
    worth = state.accepted().score_margin(1) - state.score_margin(1)
    assert worth != 0
    assert changes[legal.index(ACCEPT)] == pytest.approx(worth)
    assert all(change == 0.0 for action, change in zip(legal, changes) if action != ACCEPT)
    assert state.pending_offer() is not None  # the clones played, not the state


def test_a_choice_qualifies_only_where_its_options_differ_and_each_is_settled(monkeypatch):
    class Choice:
        def __init__(self, index, probs):
            self.choice_index, self.choice_probs = index, probs

    # unchained: one option per action
    assert decision_gaps(Choice(0, [0.25, 0.75]), ["a", "b"], False, [0.4, 0.0]) == [pytest.approx((0.4 - 0.1, 0.4 - 0.1))]
    assert decision_gaps(Choice(1, [0.25, 0.75]), ["a", "b"], False, [0.4, 0.0]) == [pytest.approx((0.0 - 0.1, 0.4 - 0.1))]
    assert decision_gaps(Choice(1, [0.25, 0.75]), ["a", "b"], False, [0.0, 0.0]) == [None]  # nothing to tell apart
    # chained, the offer's amount its own choice (no merging): "[Offer: 1 X]" and "[Offer: 2 X]"
    # share the option "[Offer:" with one change (0); the second part tells two offers apart
    # that change nothing: no gap
    monkeypatch.setattr(action_chain, "MERGED_UP_TO", 1)
    chained = Choice(None, None)
    chained.parts = [Choice(1, [0.2, 0.8]), Choice(0, [0.5, 0.5])]
    actions = ["[Accept]", "[Offer: 1 X]", "[Offer: 2 X]"]
    assert decision_gaps(chained, actions, True, [-0.3, 0.0, 0.0]) == [pytest.approx((0.0 - 0.2 * -0.3, 0.0 - 0.2 * -0.3)), None]
    # an option whose actions change the margin by different amounts does not qualify
    assert decision_gaps(chained, actions, True, [-0.3, 0.0, 0.1])[0] is None
    # merged into one choice of three options (the default for so few): each option one action
    monkeypatch.undo()
    merged = Choice(None, None)
    merged.parts = [Choice(2, [0.2, 0.3, 0.5])]
    assert decision_gaps(merged, actions, True, [-0.3, 0.0, 0.1]) == [pytest.approx((0.1 - (0.2 * -0.3 + 0.5 * 0.1), 0.1 - (0.2 * -0.3 + 0.5 * 0.1)))]


def test_every_answer_to_a_trade_carries_its_counterfactual_gap(tiny):
    from trainers.rollouts.play import play_games

    setups = _negotiation_setups(max_turns=6, mode="choice")
    hot = 20.0  # the random model almost never accepts at its own temperature; hot, a third of answers are accepts
    samples, _, _ = play_games(setups, tiny, seed=1, credit="counterfactual", temperature=hot)
    checked = {"accept": 0, "other": 0}
    for setup in setups:
        replay = envs.make("simple_negotiation", max_turns=6, mode="choice")
        replay.reset(seed=setup.seed)
        turns = {player: iter(_turns_of(samples, setup.game_id, player)) for player in setup.learner_seats}
        for action in setup.env.state.history():
            state, player = replay.state, replay.current_player()
            prompt = replay.turn_prompt()
            if player in setup.learner_seats:
                turn = next(turns[player])
                parts = [s for s in samples if _turn(s) == turn]
                gapped = [s for s in parts if DECISION_GAP_KEY in s.info]
                worth = 0.0 if state.pending_offer() is None else state.accepted().score_margin(player) - state.score_margin(player)
                if worth == 0.0:
                    assert not gapped  # nothing pending, or an even trade: no option differs, turn credit
                else:
                    accept = tiny.action_distributions([prompt], temperature=hot)[0][ACCEPT]
                    expected = (worth if action == ACCEPT else 0.0) - accept * worth
                    assert gapped == [parts[0]]  # the answer's first choice only (not how much to offer)
                    assert gapped[0].info[DECISION_GAP_KEY] == pytest.approx(expected, rel=1e-4, abs=1e-9)
                    regret = max(worth, 0.0) - accept * worth  # the better of accepting and not, minus the policy's
                    assert gapped[0].info[DECISION_REGRET_KEY] == pytest.approx(regret, rel=1e-4, abs=1e-9)
                    checked["accept" if action == ACCEPT else "other"] += 1
            replay.step(prompt.choices[prompt.action_ids.index(action)])
    assert checked["accept"] and checked["other"] > 5, checked
    assert any(s.info.get("chunk_index", 0) > 0 for s in samples)  # chained turns (the offers' later parts)


def test_the_trainer_credits_gapped_choices_by_gap_over_std_and_keeps_the_rest(tiny):
    from trainers.learning.advantages import DEFAULT_EPS, AdvantageState, trace_advantages
    from trainers.rollouts.play import play_games
    from trainers.selfplay import Trainer

    samples, _, _ = play_games(_negotiation_setups(max_turns=6, mode="choice"), tiny, seed=1, reward="turn_margin",
                               credit="counterfactual", temperature=20.0)
    plain = [s.__class__(**{**s.__dict__, "info": dict(s.info)}) for s in samples]
    trace_advantages(plain, "rae", AdvantageState())  # what every sample gets without the gaps
    trainer = Trainer.__new__(Trainer)
    trainer.config = parse_overrides(["env=simple_negotiation", "reward=turn_margin", "advantage=rae", "game_credit=counterfactual"])
    trainer.game_envs, trainer.advantage_state = {"simple_negotiation": None}, AdvantageState()
    kept, metrics = trainer.advantages(samples)
    gaps = [s.info[DECISION_GAP_KEY] for s in samples if DECISION_GAP_KEY in s.info]
    std = (sum((g - sum(gaps) / len(gaps)) ** 2 for g in gaps) / len(gaps)) ** 0.5
    for sample, before in zip(samples, plain):
        if DECISION_GAP_KEY in sample.info:
            assert sample.advantage == pytest.approx(sample.info[DECISION_GAP_KEY] / (std + DEFAULT_EPS), rel=1e-6)
        else:
            assert sample.advantage == pytest.approx(before.advantage)
    assert len(gaps) > 5 and len(set(gaps)) > 2 and min(gaps) < 0 < max(gaps)
    regrets = [s.info[DECISION_REGRET_KEY] for s in samples if DECISION_REGRET_KEY in s.info]
    assert metrics["credit/choices"] == len(gaps) and metrics["credit/regret"] == pytest.approx(sum(regrets) / len(regrets))
    assert all(r > 0 for r in regrets)  # a random model never puts all its probability on the better option
    assert len(samples) > len(gaps)  # the offers' parts kept their turn credit
    assert kept and all(s.advantage != 0 for s in kept)


def test_centered_credit_takes_each_options_mean_out_so_no_option_moves_everywhere_at_once(tiny):
    from trainers.learning.advantages import DEFAULT_EPS, AdvantageState
    from trainers.rollouts.play import play_games
    from trainers.selfplay import Trainer

    samples, _, _ = play_games(_negotiation_setups(max_turns=6, mode="choice"), tiny, seed=1, reward="turn_margin",
                               credit="counterfactual_centered", temperature=20.0)
    trainer = Trainer.__new__(Trainer)
    trainer.config = parse_overrides(["env=simple_negotiation", "reward=turn_margin", "advantage=rae",
                                      "game_credit=counterfactual_centered"])
    trainer.game_envs, trainer.advantage_state = {"simple_negotiation": None}, AdvantageState()
    trainer.advantages(samples)
    gapped = [s for s in samples if DECISION_GAP_KEY in s.info]
    gaps = [s.info[DECISION_GAP_KEY] for s in gapped]
    std = (sum((g - sum(gaps) / len(gaps)) ** 2 for g in gaps) / len(gaps)) ** 0.5
    groups = {}
    for sample in gapped:
        groups.setdefault((sample.role, tuple(sample.choice_ids[sample.choice_index])), []).append(sample)
    assert any(len(group) > 1 for group in groups.values())
    for group in groups.values():
        mean = sum(s.info[DECISION_GAP_KEY] for s in group) / len(group) / (std + DEFAULT_EPS)
        for sample in group:
            assert sample.advantage == pytest.approx(sample.info[DECISION_GAP_KEY] / (std + DEFAULT_EPS) - mean, abs=1e-6)
        assert sum(s.advantage for s in group) == pytest.approx(0.0, abs=1e-6)


def test_game_credit_refusals_name_the_key(tmp_path):
    from trainers.backends.openrlhf.launcher import refuse_unmapped_keys
    from trainers.run.preflight import preflight

    base = ["model=tiny-random", f"out={tmp_path / 'run'}", "game_credit=counterfactual"]
    with pytest.raises(ValueError, match=r"game_credit=counterfactual values a choice's options by a score margin .* which kuhn_poker does not define; use game_credit=turn"):
        preflight(parse_overrides([*base, "env=kuhn_poker"]))
    with pytest.raises(ValueError, match=r"games answer in mode=direct \(use mode=choice\)"):
        preflight(parse_overrides([*base, "env=simple_negotiation", "mode=direct"]))
    with pytest.raises(ValueError, match="sat has no game env"):
        preflight(parse_overrides([*base, "env=sat"]))
    with pytest.raises(ValueError, match=r"game_credit.*turn, counterfactual"):
        parse_overrides(["game_credit=exact"])
    with pytest.raises(ValueError, match="game_credit='counterfactual'"):
        refuse_unmapped_keys(TrainConfig(backend="openrlhf", env=["simple_negotiation"], game_credit="counterfactual"))
    with pytest.raises(ValueError, match="game_credit='counterfactual_centered'"):
        refuse_unmapped_keys(TrainConfig(backend="openrlhf", env=["simple_negotiation"], game_credit="counterfactual_centered"))
    with pytest.raises(ValueError, match=r"game_credit=counterfactual_centered values a choice's options by a score margin"):
        preflight(parse_overrides(["model=tiny-random", f"out={tmp_path / 'run'}", "game_credit=counterfactual_centered", "env=kuhn_poker"]))


def _perfect_play_value(state, player):
    """What `player` gets from `state` when both sides play perfectly: plain negamax on the
    states themselves (no positions, no memo), the reference `games.positions.solved_values` must match."""
    if state.is_terminal():
        return state.returns()[player]
    mover, best = state.current_player(), None
    for action in state.legal_actions():
        child = state.clone()
        child.apply_action(action)
        value = _perfect_play_value(child, mover)
        best = value if best is None or value > best else best
    return best if mover == player else -best


def test_solved_values_are_perfect_play_from_every_position():
    from games.positions import position_graph, solved_values

    graph = position_graph(games.load("tic_tac_toe"))
    values = solved_values(graph)
    assert values[-1] == (0.0, 0.0)  # the root is numbered last: TicTacToe is a draw
    deep = [i for i, state in enumerate(graph.states) if len(state.legal_actions()) in (4, 5, 6)][::97]
    assert len(deep) > 10
    for i in deep:
        state = graph.states[i]
        assert values[i] == tuple(_perfect_play_value(state, p) for p in range(2))


def test_every_tic_tac_toe_move_among_unequal_options_carries_its_solved_gap(tiny):
    from trainers.rollouts.play import GameSetup, play_games

    setups = [GameSetup("tic_tac_toe", envs.make("tic_tac_toe", mode="choice"), seed=s, learner_seats=frozenset({0, 1}), game_id=s)
              for s in range(4)]
    samples, _, _ = play_games(setups, tiny, seed=3, credit="solved")
    checked = {"gapped": 0, "even": 0}
    for setup in setups:
        replay = envs.make("tic_tac_toe", mode="choice")
        replay.reset(seed=setup.seed)
        turns = {player: iter(_turns_of(samples, setup.game_id, player)) for player in (0, 1)}
        for action in setup.env.state.history():
            state, player, prompt = replay.state, replay.current_player(), replay.turn_prompt()
            turn = next(turns[player])
            sample = next(s for s in samples if _turn(s) == turn)
            q = {}
            for option in state.legal_actions():
                child = state.clone()
                child.apply_action(option)
                q[option] = _perfect_play_value(child, player)
            if len(set(q.values())) == 1:
                assert DECISION_GAP_KEY not in sample.info  # nothing to tell apart: the turn's credit
                checked["even"] += 1
            else:
                pi = tiny.action_distributions([prompt])[0]
                expected = q[action] - sum(pi[o] * q[o] for o in q)
                assert sample.info[DECISION_GAP_KEY] == pytest.approx(expected, rel=1e-4, abs=1e-9)
                assert sample.info[DECISION_REGRET_KEY] == pytest.approx(max(q.values()) - sum(pi[o] * q[o] for o in q), rel=1e-4, abs=1e-9)
                checked["gapped"] += 1
            replay.step(prompt.choices[prompt.action_ids.index(action)])
    assert checked["gapped"] > 5 and checked["even"] > 3, checked


def test_solved_credit_is_refused_for_games_that_cannot_be_solved_over_positions(tmp_path):
    from trainers.backends.openrlhf.launcher import refuse_unmapped_keys
    from trainers.run.preflight import preflight

    base = ["model=tiny-random", f"out={tmp_path / 'run'}", "game_credit=solved"]
    for env_id in ("kuhn_poker", "simple_negotiation"):
        with pytest.raises(ValueError, match=rf"game_credit=solved values a choice's options by solving the game .* {env_id} cannot be"):
            preflight(parse_overrides([*base, f"env={env_id}"]))
    out = tmp_path / "ttt"
    assert main(["model=tiny-random", "env=tic_tac_toe", "game_credit=solved", "advantage=rae", "steps=1", "samples_per_step=16",
                 "eval_every=0", "threads=1", "progress=false", "tensorboard=false", "save_every=0", f"out={out}"]) == 0
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["credit/choices"] > 0 and first["credit/regret"] > 0 and first["samples_trained"] > 0
    with pytest.raises(ValueError, match="game_credit='solved'"):
        refuse_unmapped_keys(TrainConfig(backend="openrlhf", env=["tic_tac_toe"], game_credit="solved"))
