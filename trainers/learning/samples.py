"""The unit of training data: one turn of one player (or one answer to a task).

Rollouts produce `TurnSample`s, advantages fill in `advantage`, the loss consumes them.
Two kinds share one record:

* free text (``think`` / ``direct`` modes, tasks): the policy generated `response_ids`;
  `old_logprobs[i]` is the log-probability of `response_ids[i]` under the rollout
  policy's raw (temperature 1) distribution;
* choice (``choice`` mode): the policy picked `choice_index` among the legal action
  strings, tokenised as `choice_ids`; its probability is the softmax over the candidates'
  sequence log-probabilities, and `old_logprobs` holds the single value
  ``log pi_old(chosen)``. `response_ids` are the chosen candidate's tokens.

A Markovian-thinking chunk (``trainers.rollouts.thinking``) is a free-text sample whose prompt is
the chunk's prompt (query + carried tokens); it names its trace in ``info[TRACE_KEY]``,
carries its whole trace's advantage and, in `loss_tokens`, the trace's token count, by
which the learner divides its summed token loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRACE_KEY = "trace"
"""``sample.info[TRACE_KEY]`` names the trace a chunk sample belongs to (Markovian thinking)."""
TURN_KEY = "turn"
"""``sample.info[TURN_KEY]``: which turn of its game a sample belongs to, set where each turn
has a reward of its own (``reward=margin``, ``trainers.rollouts.rewards``), so that baselines
count each turn's reward as one return (with the outcome a player's turns share one)."""


@dataclass
class TurnSample:
    prompt_ids: list[int]
    response_ids: list[int]
    old_logprobs: list[float]
    env_id: str
    role: int
    """The seat (player id) that made this turn; 0 for single-agent tasks."""
    game_id: int
    """Which game (or GRPO group, for tasks) the turn belongs to."""
    reward: float = 0.0
    """What the turn is trained on: the return of `role` in its game (every turn of a player
    gets the same, gamma = 1), or with ``reward=margin`` its margin to the end
    (``trainers.rollouts.rewards``)."""
    advantage: float = 0.0
    choice_ids: list[list[int]] | None = None
    """Choice mode: the token ids of every legal candidate string."""
    choice_index: int | None = None
    """Choice mode: which candidate was chosen."""
    invalid: bool = False
    """The answer was not a legal action (it took the invalid-action consequence)."""
    info: dict = field(default_factory=dict)
    loss_tokens: int | None = None
    """The learner divides this sample's summed token loss (PPO and KL terms) by this many
    tokens instead of what its `length_norm` would use (None). Markovian chunks set it to
    their trace's length, so a trace's chunks together weigh as one sequence normalised by
    its length."""

    @property
    def is_choice(self) -> bool:
        return self.choice_ids is not None
