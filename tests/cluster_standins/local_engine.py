"""A transformers model behind the engine interface OpenRLHF's agent executors call (tests only).

OpenRLHF 0.11.2's vLLM engine actor (`openrlhf.trainer.ray.vllm_engine.RolloutRayActor`)
gives an executor `await llm_engine.generate(prompt_token_ids, sampling_params,
multi_modal_data=None)` and returns vLLM's `RequestOutput`; executors read
`outputs[0].token_ids`, `.text`, `.finish_reason` ("stop" | "length") and, when
`sampling_params.logprobs` is set, `.logprobs[i][token_id].logprob`. `LocalEngine`
answers the same call on an in-process transformers model, so the agent file runs end to
end without vLLM or a GPU (tests, dry runs). `SamplingParams` carries the fields of vLLM's
class that the executors read or set.

It stops where vLLM stops: at the tokenizer's and the generation config's eos ids and at
`sampling_params.stop_token_ids`, not at a chat template's end-of-turn token unless the
caller asks for it (vLLM does not know the chat template either).

Log-probs follow the suite's convention (raw model, temperature 1), as the vLLM engines
of a run started by the launcher report them ("processed_logprobs" only when OpenRLHF's
importance-sampling correction asks for them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch



@dataclass
class SamplingParams:
    """The fields of `vllm.SamplingParams` an agent executor reads or sets."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    logprobs: int | None = None
    skip_special_tokens: bool = False
    stop_token_ids: list[int] | None = None
    min_tokens: int = 0
    top_k: int = -1


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    token_ids: list[int]
    text: str
    finish_reason: str
    logprobs: list[dict[int, Logprob]] | None = field(default=None)


class LocalEngine:
    """`generate(prompt_token_ids, sampling_params)` on a transformers model, one request at a time.

    Requests are sampled from one `torch.Generator` seeded with `seed`, in the order they
    arrive; the executor's coroutines arrive in a deterministic order, so a run is
    reproducible. `calls` counts the requests served.
    """

    def __init__(self, model, tokenizer, *, seed: int = 0):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        self.calls = 0

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        await asyncio.sleep(0)  # let the other executions run, as a real engine's await does
        self.calls += 1
        ids, logprobs, finish = self._sample(list(prompt_token_ids), sampling_params)
        text = self.tokenizer.decode(ids, skip_special_tokens=sampling_params.skip_special_tokens)
        entries = [{token: Logprob(value)} for token, value in zip(ids, logprobs)] if sampling_params.logprobs is not None else None
        return SimpleNamespace(prompt_token_ids=list(prompt_token_ids), outputs=[CompletionOutput(ids, text, finish, entries)])

    @torch.inference_mode()
    def _sample(self, prompt: list[int], params: SamplingParams):
        if not params.max_tokens or params.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {params.max_tokens}")
        device = self.model.device
        out = self.model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
        cache_key = "cache" if "cache" in out else "past_key_values"
        ids, logprobs = [], []
        for _ in range(params.max_tokens):
            logits = out.logits[0, -1].float()
            raw = torch.log_softmax(logits, dim=-1)
            token = self._pick(logits, raw, params)
            ids.append(token)
            logprobs.append(float(raw[token]))
            if token in self.eos_ids or token in (params.stop_token_ids or ()):
                return ids, logprobs, "stop"
            out = self.model(input_ids=torch.tensor([[token]], device=device), use_cache=True, **{cache_key: out[cache_key]})
        return ids, logprobs, "length"

    def _pick(self, logits, raw, params: SamplingParams) -> int:
        if params.temperature == 0:
            return int(raw.argmax())
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1:
            ordered, order = probs.sort(descending=True)
            ordered[(ordered.cumsum(-1) - ordered) >= params.top_p] = 0
            probs = torch.zeros_like(probs).scatter_(-1, order, ordered)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def eos_token_ids(model, tokenizer) -> set[int]:
    """What vLLM stops on by itself: the tokenizer's eos and the generation config's eos ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        ids.update([config_eos] if isinstance(config_eos, int) else config_eos)
    return ids


def to_experience(response: dict, max_len: int):
    """One executor response as the single-sample `Experience` OpenRLHF 0.11.2 builds from it.

    Mirrors `SamplesGenerator._process_response_into_experience`
    (openrlhf/trainer/ppo_utils/samples_generator.py, which imports vLLM): the sequence is
    the observation tokens cut at `max_len`, `action_mask` covers the action ranges shifted
    by one (it scores next-token predictions), the reward sits in `rewards`, and every
    `extra_logs` value becomes a one-element tensor in `info`.
    """
    from openrlhf.trainer.ppo_utils import Experience

    tokens = torch.tensor(response["observation_tokens"], dtype=torch.long)
    attention_mask = torch.ones(len(tokens), dtype=torch.long)
    action_mask = torch.zeros(len(tokens), dtype=torch.long)
    for start, end in response["action_ranges"]:
        action_mask[start:end] = 1
    sequences, attention_mask, action_mask = tokens[:max_len], attention_mask[:max_len], action_mask[1:max_len]
    rollout = response["rollout_log_probs"]
    info = {"reward": torch.tensor([response["reward"]]), "score": torch.tensor([response["scores"]])}
    info.update({key: torch.tensor([value]) for key, value in response["extra_logs"].items()})
    marked = torch.nonzero(action_mask)[:, 0]
    return Experience(
        sequences=sequences[None],
        attention_mask=attention_mask[None],
        action_mask=action_mask[None].bool(),
        rollout_log_probs=None if rollout is None else torch.tensor(rollout[1:max_len])[None],
        prompts=[response["prompt"]],
        labels=[response["label"]],
        rewards=torch.tensor([response["reward"]], dtype=torch.float32),
        scores=torch.tensor([response["scores"]], dtype=torch.float32),
        response_length=torch.tensor([int(marked[-1] - marked[0] + 1) if len(marked) else 0]),
        truncated=torch.tensor([response["truncated"]]),
        total_length=torch.tensor([float(len(sequences))]),
        info=info,
    )
