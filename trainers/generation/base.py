"""What a rollout needs from an inference engine, and the token layout every engine shares.

The trainer talks to a ``GenerationBackend`` (``generate`` and ``score_choices``). Engines:
``trainers.generation.transformers_backend`` (in-process, CPU or GPU, the default) and
``trainers.generation.vllm_backend`` (vLLM). Training recomputes log-probs with
``trainers.generation.logprobs``.

Log-prob convention (shared by every engine): a log-prob is ``log_softmax(logits)[token]``
of the RAW model distribution, i.e. at temperature 1 and without top-p truncation, whatever
temperature and top-p were used to pick the token. That is exactly what
``logprobs.sequence_logprobs`` recomputes, so the "old log-probs" recorded at rollout time
and the "new log-probs" of the loss are the same function of the weights and the PPO ratio
is 1 before the first update.

Token layout (also shared): a prompt is rendered and tokenised once (``encode_prompts``) and
the response ids are appended to those prompt ids; nothing is re-tokenised across the
prompt/response boundary. A prompt given as ``PromptIds`` is already token ids and is used
as is: that is how Markovian thinking (``trainers.generation.traces``) sends a chunk
prompt rebuilt token by token.

Budgets: ``max_new_tokens`` is one int for every prompt or, for engines whose
``per_prompt_max_new_tokens`` attribute is true, one int per prompt (``prompt_budgets``),
so requests with different budgets (Markovian chunks at different chunk indices) share
one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol



@dataclass(frozen=True)
class PromptIds:
    """A prompt that is already token ids: no template, no special tokens added."""

    ids: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))


Prompt = list[dict] | str | PromptIds

# End-of-turn markers of common chat formats. A chat model often ends its turn with one of
# these while its config names a different eos token, so they stop generation as well.
_END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
)


@dataclass
class Generation:
    """One sampled response.

    ``response_ids`` ends with the stop token when ``finish_reason == "stop"`` (the trainer
    should learn to stop, so the stop token is part of the action) and ``logprobs[i]`` is the
    raw-model log-prob of ``response_ids[i]`` (see the module docstring). ``text`` is the
    response decoded without special tokens. ``finish_reason`` is ``"stop"`` (a stop token
    was sampled) or ``"length"`` (``max_new_tokens`` reached).
    """

    text: str
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    finish_reason: str


class GenerationBackend(Protocol):
    """What a rollout needs from an inference engine (transformers here, vLLM later)."""

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int | Sequence[int],
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int,
        batch_size: int = 8,
    ) -> list[Generation]: ...

    def score_choices(
        self,
        prompts: Sequence[Prompt],
        choices: Sequence[Sequence[str]],
        *,
        batch_size: int = 16,
    ) -> list[list[float]]: ...


def encode_prompts(tokenizer, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids of each prompt, as every function here sees them.

    A chat prompt (a list of ``{"role", "content"}`` messages) is rendered with the
    tokenizer's chat template plus the assistant generation prompt, then tokenised without
    adding special tokens (the template already contains them). A string is raw text and is
    tokenised with the tokenizer's usual special tokens (e.g. a BOS). ``PromptIds`` are
    taken as they are.
    """
    ids = []
    for prompt in prompts:
        if isinstance(prompt, PromptIds):
            ids.append(list(prompt.ids))
        elif isinstance(prompt, str):
            ids.append(tokenizer(prompt).input_ids)
        else:
            text = tokenizer.apply_chat_template(
                list(prompt), add_generation_prompt=True, tokenize=False
            )
            ids.append(tokenizer(text, add_special_tokens=False).input_ids)
    return ids


def prompt_budgets(max_new_tokens: int | Sequence[int], count: int) -> list[int]:
    """One generation budget per prompt: an int applies to all, a sequence gives one each."""
    if isinstance(max_new_tokens, int):
        budgets = [max_new_tokens] * count
    else:
        budgets = [int(b) for b in max_new_tokens]
        if len(budgets) != count:
            raise ValueError(f"max_new_tokens gives {len(budgets)} budgets for {count} prompts")
    for budget in budgets:
        if budget < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {budget}")
    return budgets


def encode_choice(tokenizer, choice: str) -> list[int]:
    """Response ids of a candidate continuation: the string tokenised on its own.

    They are appended to the prompt ids unchanged, which is the same layout as a sampled
    response, so a trainer that trains on the chosen candidate uses exactly these ids.
    Special-token text is recognised, so ``"[bet]<|im_end|>"`` scores a complete turn.
    """
    return tokenizer(choice, add_special_tokens=False).input_ids


def default_stop_token_ids(model, tokenizer) -> list[int]:
    """Ids that end a response: the tokenizer's and model's eos, and chat end-of-turn tokens."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    config_eos = getattr(
        getattr(model, "generation_config", None), "eos_token_id", None
    )
    if config_eos is not None:
        ids.update([config_eos] if isinstance(config_eos, int) else config_eos)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in _END_OF_TURN_TOKENS if token in vocab)
    return sorted(ids)

