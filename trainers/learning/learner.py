"""The learner: PPO updates of a causal LM on turn samples, and its checkpoints.

One ``update(samples)`` is CleanRL's inner loop: for each of ``ppo_epochs`` passes, shuffle
the samples (with the learner's own seeded generator), cut them into mini-batches (one
optimizer step each) and those into micro-batches (one forward/backward each, gradients
accumulated), compute the clipped surrogate of ``trainers.learning.loss`` and step AdamW after
gradient-norm clipping. Settings come from the run's one ``TrainConfig``.

Micro-batches are cut by distinct prompt, not by sample: choice-mode samples that share a
prompt and candidate set (a small game asks the same few questions in every game) go into
the same micro-batch and share one forward pass, so a step costs in proportion to the
distinct states visited, not to the games played. The gradient is the same as scoring
every sample on its own (the loss is a sum over samples either way).

Old log-probs: the ratio is ``pi_new / pi_old`` with ``pi_old`` recorded at rollout. The
rollout policy is the policy at the start of the update, so the first ratio is 1.
``recompute_old_logprobs`` replaces the rollout's numbers with the learner's own forward
pass, for engines (vLLM, another dtype) whose numbers differ slightly.

The model stays in eval mode while training: dropout would make the learner's log-probs a
different (random) function from the rollout's, and the first ratio would not be 1.

Reference policy (``kl_coef > 0``): the KL penalty pulls the policy towards it. It starts
as the initial policy; ``refresh_reference`` moves it to the current one, which with a
fixed period is magnetic mirror descent's moving magnet (``trainers.selfplay`` calls it
every ``magnet_every`` steps). Full fine-tuning keeps a frozen copy of the model; LoRA
keeps a copy of the adapter tensors and swaps them in to score (the base is shared).
In choice mode the KL is exact over the candidates, ``sum_a pi(a) (log pi(a) - log ref(a))``;
for free text it is the k3 estimator summed over the tokens (``loss.reference_kl``). Both are
divided by the same per-sample divisor as the PPO term (the width ``max_new_tokens`` under
``length_norm=constant``, 1 for a choice, a Markovian chunk's trace length), so one
``kl_coef`` weighs a decision the same in every mode.

Policy average (``policy_average=ema``): the learner keeps an exponential moving average of
its trainable tensors, ``avg <- d * avg + (1 - d) * w`` after every update (starting at the
initial weights), and ``serving_average()`` swaps it in while the policy is evaluated or
saved. Self-play's last iterate cycles around an equilibrium; the average of the iterates
is what converges in two-player zero-sum games, and averaging weights is the way to serve
one model for it.

A non-finite loss or gradient stops the update before the optimizer steps
(``NonFiniteLossError``), so NaN weights are never written to a checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import pickle
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainers.run import checkpoints
from trainers.run.config import TrainConfig
from trainers.generation.logprobs import (
    PrefixRun, PrefixView, candidate_logprobs, extended_prefix, fed_tokens, prefix_groups, prefix_run, sequence_logprobs,
    shared_prefix_length,
)
from trainers.learning.loss import pad_logprobs, ppo_clipped_loss, reference_kl, sample_divisors
from trainers.learning.samples import TurnSample

_LOSS_METRICS = ("loss", "clip_fraction", "approx_kl", "ratio_mean")


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm of an update is NaN or infinite."""


@dataclass
class Scored:
    """The current policy's view of some samples (see ``Learner.score``).

    ``rows[i]``: the log-probs of what sample i did (one per response token; one value for a
    choice sample). ``log_policies[i]``: for a choice sample, the log-softmax over its
    candidates (shared by samples with the same prompt and candidates); None for free text.
    """

    rows: list[torch.Tensor]
    log_policies: list[torch.Tensor | None] = field(default_factory=list)


class Learner:
    """Holds the policy (optionally LoRA-wrapped), its optimizer, its reference and the shuffling generator.

    ``learner.model`` is the policy to roll out with (a ``peft.PeftModel`` under LoRA); it is
    updated in place, so a generation backend holding it samples from the new weights.
    ``tokenizer``, if given, is saved beside full weights so that a checkpoint's ``model``
    folder loads with ``trainers.models.load_model(path)``.
    """

    def __init__(self, model, config: TrainConfig, *, tokenizer=None):
        self.config = config
        self.tokenizer = tokenizer
        self.is_lora = config.lora_rank > 0
        self.model = _wrap_lora(model, config) if self.is_lora else model
        self.model.eval()
        self.trainable_parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable_parameters,
            lr=config.lr,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
        self.shuffle_generator = torch.Generator().manual_seed(config.seed)
        self.average: list[torch.Tensor] | None = (
            [p.detach().clone() for p in self.trainable_parameters] if config.policy_average == "ema" else None
        )
        self.reference_model = None
        self.reference_adapter: list[torch.Tensor] | None = None
        if config.kl_coef > 0:
            if self.is_lora:
                self.reference_adapter = [p.detach().clone() for p in self.trainable_parameters]
            else:
                self.reference_model = copy.deepcopy(self.model).requires_grad_(False)

    # ---- log-probs -------------------------------------------------------------------

    def policy_logprobs(self, samples: Sequence[TurnSample]) -> list[torch.Tensor]:
        """The current policy's log-probs of what each sample did, with gradients.

        Free text: one value per response token, ``log pi(response_t | prompt, response_<t)``.
        Choice: a single value, ``log softmax_j(log pi(candidate_j | prompt))[choice_index]``,
        the candidates' sequence log-probs normalised over the legal candidates.
        """
        return self.score(self.model, samples).rows

    def recompute_old_logprobs(self, samples: list[TurnSample]) -> list[TurnSample]:
        """Overwrite ``sample.old_logprobs`` with this model's log-probs (no gradients); returns samples."""
        with torch.no_grad():
            for micro in micro_batches(samples, list(range(len(samples))), self.config):
                batch = [samples[i] for i in micro]
                for sample, values in zip(batch, self.score(self.model, batch).rows):
                    sample.old_logprobs = values.tolist()
        return samples

    def score(self, model, samples: Sequence[TurnSample], *, prefix: PrefixRun | PrefixView | None = None) -> Scored:
        """Log-probs of each sample under `model`: all free-text rows in one forward, all
        distinct choice prompts in another; `prefix`: a run of a prefix every prompt starts
        with (`PrefixRun`, shared by the update's passes, or a pass's `extended_prefix`)."""
        rows: list[torch.Tensor | None] = [None] * len(samples)
        log_policies: list[torch.Tensor | None] = [None] * len(samples)
        text = [i for i, s in enumerate(samples) if not s.is_choice]
        if text:
            # a trained direct-mode policy answers the same question the same way again and
            # again: each distinct (prompt, response) is run once and shared
            distinct_text: dict[tuple, int] = {}
            for i in text:
                distinct_text.setdefault(text_key(samples[i]), len(distinct_text))
            keys = list(distinct_text)
            values = sequence_logprobs(model, [list(k[0]) for k in keys], [list(k[1]) for k in keys], prefix=prefix)
            for i in text:
                rows[i] = values[distinct_text[text_key(samples[i])]]
        choice = [i for i, s in enumerate(samples) if s.is_choice]
        if choice:
            # one row per distinct prompt, with every candidate any of its samples scores: the
            # parts of one chained answer (a negotiation offer, a SAT assignment) ask the same
            # prompt with different candidates, and share its forward
            columns: dict[tuple, dict[tuple, int]] = {}
            for i in choice:
                owned = columns.setdefault(tuple(samples[i].prompt_ids), {})
                for candidate in samples[i].choice_ids:
                    owned.setdefault(tuple(candidate), len(owned))
            prompts = list(columns)
            scores = dict(zip(prompts, candidate_logprobs(model, [list(p) for p in prompts], [[list(c) for c in columns[p]] for p in prompts], prefix=prefix)))
            shared: dict[tuple, torch.Tensor] = {}
            for i in choice:
                key = choice_key(samples[i])
                if key not in shared:
                    owned = columns[key[0]]
                    shared[key] = torch.log_softmax(scores[key[0]][[owned[c] for c in key[1]]], dim=0)
                log_policies[i] = shared[key]
                rows[i] = shared[key][samples[i].choice_index].reshape(1)
        return Scored(rows, log_policies)

    @torch.no_grad()
    def reference_scores(self, samples: Sequence[TurnSample]) -> Scored:
        """The reference policy's log-probs of the samples (no gradients)."""
        if self.reference_model is not None:
            return self.score(self.reference_model, samples)
        if self.reference_adapter is None:
            raise RuntimeError("this learner has no reference policy (kl_coef is 0)")
        current = [p.detach().clone() for p in self.trainable_parameters]
        try:
            for parameter, saved in zip(self.trainable_parameters, self.reference_adapter):
                parameter.data.copy_(saved)
            return self.score(self.model, samples)
        finally:
            for parameter, saved in zip(self.trainable_parameters, current):
                parameter.data.copy_(saved)

    def refresh_reference(self) -> None:
        """Make the current policy the KL reference (magnetic mirror descent's magnet update)."""
        if self.reference_model is not None:
            self.reference_model.load_state_dict(self.model.state_dict())
        elif self.reference_adapter is not None:
            self.reference_adapter = [p.detach().clone() for p in self.trainable_parameters]
        else:
            raise RuntimeError("this learner has no reference policy (kl_coef is 0)")

    @torch.no_grad()
    def update_average(self) -> None:
        """Move the moving average of the weights towards the current ones (``policy_average=ema``)."""
        if self.average is None:
            raise RuntimeError("this learner keeps no policy average (policy_average is none)")
        decay = self.config.average_decay
        for average, parameter in zip(self.average, self.trainable_parameters):
            average.mul_(decay).add_(parameter.detach(), alpha=1.0 - decay)

    @contextlib.contextmanager
    def serving_average(self):
        """Within the block the model holds the averaged weights; the current ones come back after it.

        Does nothing without a policy average, so callers need not check.
        """
        if self.average is None:
            yield
            return
        current = [p.detach().clone() for p in self.trainable_parameters]
        try:
            with torch.no_grad():
                for parameter, average in zip(self.trainable_parameters, self.average):
                    parameter.copy_(average)
            yield
        finally:
            with torch.no_grad():
                for parameter, saved in zip(self.trainable_parameters, current):
                    parameter.copy_(saved)

    def set_lr(self, lr: float) -> None:
        """Set the optimizer's learning rate (the schedule's value for the coming step)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # ---- update ----------------------------------------------------------------------

    def update(self, samples: list[TurnSample]) -> dict[str, float]:
        """Run ``ppo_epochs`` x shuffled mini-batches of PPO on ``samples``; return the metrics.

        Metrics: ``loss``, ``clip_fraction``, ``approx_kl``, ``ratio_mean`` (and ``kl_ref``
        with a reference) averaged over samples; ``grad_norm`` (before clipping, mean over
        optimizer steps); ``entropy_choice`` (exact entropy over the candidates, mean over
        choice samples) and ``neg_logprob`` (mean -log pi of the sampled response tokens)
        from the first pass; ``samples``, ``tokens`` (response tokens per pass),
        ``forward_passes``, ``optimizer_steps``, ``time_s``. An empty batch changes nothing
        and consumes no randomness, so skipping a step keeps runs reproducible.
        """
        start_time = time.perf_counter()
        if not samples:
            return {"samples": 0.0, "tokens": 0.0, "optimizer_steps": 0.0, "time_s": 0.0}
        config = self.config
        if config.recompute_old_logprobs:
            self.recompute_old_logprobs(samples)
        old = [_old_logprobs(sample) for sample in samples]
        advantages = torch.tensor([float(s.advantage) for s in samples], dtype=torch.float32)
        reference = self._reference(samples) if config.kl_coef > 0 else None
        width = config.loss_length_constant() or max(row.numel() for row in old)
        # a Markovian chunk is divided by its trace's length (TurnSample.loss_tokens), 0: the length norm's
        loss_tokens = torch.tensor([float(s.loss_tokens or 0) for s in samples])
        has_loss_tokens = bool((loss_tokens > 0).any())
        mini_size = config.mini_batch_size or len(samples)

        totals = dict.fromkeys(_LOSS_METRICS, 0.0)
        kl_total = 0.0
        weight = passes = 0
        grad_norms = []
        entropies, neg_logprob_sum, text_tokens = [], 0.0, 0
        for epoch in range(config.ppo_epochs):
            order = torch.randperm(len(samples), generator=self.shuffle_generator).tolist()
            for mini in _chunks(order, mini_size):
                self.optimizer.zero_grad(set_to_none=True)
                # the mini-batch's prompts start with the same chat template and rules: run
                # that prefix once for all its passes, not once a pass
                prefix = prefix_run(self.model, [samples[i].prompt_ids for i in mini])
                for micro in micro_batches(samples, mini, config, shared=prefix.length if prefix else None):
                    batch = [samples[i] for i in micro]
                    own = extended_prefix(self.model, prefix, [s.prompt_ids for s in batch]) if prefix else None
                    scored = self.score(self.model, batch, prefix=own)
                    passes += 1
                    new, mask = pad_logprobs(scored.rows)
                    old_padded, _ = pad_logprobs([old[i] for i in micro], new.shape[1])
                    loss, metrics = ppo_clipped_loss(
                        new,
                        old_padded.to(new.device),
                        advantages[micro].to(new.device),
                        mask,
                        clip=config.clip,
                        length_norm=config.length_norm,
                        max_length=width,
                        loss_tokens=loss_tokens[micro] if has_loss_tokens else None,
                    )
                    batch_entropies = [_entropy(lp) for lp in scored.log_policies if lp is not None]
                    if config.entropy_coef and batch_entropies:
                        # choice mode: exact entropy over the legal candidates at each visited
                        # state; keeps self-play from collapsing onto one card-blind action
                        loss = loss - config.entropy_coef * torch.stack(batch_entropies).sum() / len(micro)
                    if reference is not None:
                        kl = reference_kl(scored.rows, scored.log_policies, [reference[i] for i in micro])
                        divisors = sample_divisors(
                            mask, length_norm=config.length_norm, max_length=width,
                            loss_tokens=loss_tokens[micro] if has_loss_tokens else None,
                        )
                        loss = loss + config.kl_coef * (kl / divisors.to(kl.device)).sum() / len(micro)
                        kl_total += kl.sum().item()
                    if not torch.isfinite(loss):
                        raise NonFiniteLossError(
                            f"the loss became {loss.item()} at epoch {epoch}; stopping before the optimizer "
                            f"steps (lower lr, check rewards and advantages)"
                        )
                    # Weighting each micro-batch by its share of the mini-batch makes the
                    # accumulated gradient that of the mini-batch's loss (both length norms
                    # average over samples), whatever the micro-batch sizes.
                    (loss * (len(micro) / len(mini))).backward()
                    for name, value in metrics.items():
                        totals[name] += value * len(micro)
                    weight += len(micro)
                    if epoch == 0:
                        entropies.extend(e.detach() for e in batch_entropies)
                        for sample, row in zip(batch, scored.rows):
                            if not sample.is_choice:
                                neg_logprob_sum -= row.detach().sum().item()
                                text_tokens += row.numel()
                if prefix is not None:
                    prefix.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable_parameters, config.max_grad_norm).item()
                if not math.isfinite(grad_norm):
                    self.optimizer.zero_grad(set_to_none=True)
                    raise NonFiniteLossError(f"the gradient norm became {grad_norm}; stopping before the optimizer steps")
                grad_norms.append(grad_norm)
                self.optimizer.step()

        result = {name: totals[name] / weight for name in _LOSS_METRICS}
        if reference is not None:
            result["kl_ref"] = kl_total / weight
        result["grad_norm"] = sum(grad_norms) / len(grad_norms)
        if entropies:
            result["entropy_choice"] = torch.stack(entropies).mean().item()
        if text_tokens:
            result["neg_logprob"] = neg_logprob_sum / text_tokens
        result["samples"] = float(len(samples))
        result["tokens"] = float(sum(row.numel() for row in old))
        result["forward_passes"] = float(passes)
        result["optimizer_steps"] = float(len(grad_norms))
        result["time_s"] = time.perf_counter() - start_time
        return result

    def imitate(self, samples: list[TurnSample]) -> dict[str, float]:
        """One optimizer step of behaviour cloning: maximise the log-likelihood of each response.

        The format phase uses it on answers written exactly as the parser expects. Loss:
        the mean over samples of the summed response-token negative log-likelihood.
        """
        if not samples:
            return {"bc_loss": 0.0, "bc_samples": 0.0}
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in micro_batches(samples, list(range(len(samples))), self.config):
            rows = self.score(self.model, [samples[i] for i in micro]).rows  # identical answers share a forward
            loss = -torch.stack([row.sum() for row in rows]).sum() / len(samples)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"the behaviour-cloning loss became {loss.item()}")
            loss.backward()
            total += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable_parameters, self.config.max_grad_norm).item()
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"the behaviour-cloning gradient norm became {grad_norm}")
        self.optimizer.step()
        return {"bc_loss": total, "bc_samples": float(len(samples)), "bc_grad_norm": grad_norm}

    def _reference(self, samples: list[TurnSample]) -> list:
        """Per sample: the reference's log-policy over candidates (choice) or token log-probs (text)."""
        result: list = [None] * len(samples)
        for micro in micro_batches(samples, list(range(len(samples))), self.config):
            scored = self.reference_scores([samples[i] for i in micro])
            for i, row, log_policy in zip(micro, scored.rows, scored.log_policies):
                result[i] = log_policy if log_policy is not None else row
        return result

    # ---- checkpoints -----------------------------------------------------------------

    def save_checkpoint(self, directory, step: int, extra_state: dict | None = None, *, keep_last: int = 3) -> Path:
        """Write ``directory/step_<step>`` atomically, with checksums; keep the newest ``keep_last``.

        Contents: the weights (``model/``, a Hugging Face folder) or, under LoRA, only the
        adapter (``adapter/``); the optimizer state; every RNG state; the KL reference when
        it has moved away from the initial policy; the policy average, if kept; ``extra_state`` (RAE baselines,
        curriculum, league, step, ...: JSON when it round-trips exactly, else pickle).
        """
        from safetensors.torch import save_file

        extra_state = extra_state or {}

        def fill(folder: Path) -> dict:
            self._write_weights(folder)
            checkpoints.torch_save(self.optimizer.state_dict(), folder / "optimizer.pt")
            checkpoints.torch_save(_rng_state(self.shuffle_generator), folder / "rng.pt")
            self._write_reference(folder)
            if self.average is not None:
                save_file({str(i): t.contiguous() for i, t in enumerate(self.average)}, folder / "average.safetensors")
            if _json_round_trips(extra_state):
                (folder / "extra_state.json").write_text(json.dumps(extra_state))
            else:
                (folder / "extra_state.pkl").write_bytes(pickle.dumps(extra_state))
            return {"step": step, "weights": self._weights_kind()}

        path = checkpoints.write_atomically(Path(directory) / checkpoints.checkpoint_name(step), fill)
        checkpoints.prune(directory, keep_last)
        return path

    def save_policy(self, folder, meta: dict | None = None) -> Path:
        """Write only the policy's weights (and tokenizer) to `folder`, atomically: a league snapshot or the best policy."""

        def fill(staging: Path) -> dict:
            self._write_weights(staging)
            return {"weights": self._weights_kind(), **(meta or {})}

        return checkpoints.write_atomically(folder, fill)

    def load_checkpoint(self, path) -> dict:
        """Restore weights (or adapter), optimizer, reference and every RNG state from ``path``; return its extra state.

        The checksums are verified first (``checkpoints.DamagedCheckpoint`` if they fail).
        Loading a pickled extra state runs pickle: load only checkpoints your runs wrote.
        """
        path = Path(path)
        meta = checkpoints.read_meta(path)
        if meta["weights"] != self._weights_kind():
            raise ValueError(
                f"checkpoint {path} holds {meta['weights']} weights but this learner trains "
                f"{'a LoRA adapter' if self.is_lora else 'the full model'}; set lora_rank to match the saved run"
            )
        self.load_policy(path)
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        _set_rng_state(torch.load(path / "rng.pt", weights_only=True), self.shuffle_generator)
        self._read_reference(path)
        if self.average is not None:
            self._read_average(path)
        if (path / "extra_state.json").exists():
            return json.loads((path / "extra_state.json").read_text())
        return pickle.loads((path / "extra_state.pkl").read_bytes())

    def load_policy(self, path) -> None:
        """Load the weights (or adapter) saved in a checkpoint or policy folder into this learner's model."""
        path = Path(path)
        if self.is_lora:
            _load_adapter(self.model, path / "adapter", len(self.trainable_parameters))
        else:
            _load_full_weights(self.model, path / "model")

    def _weights_kind(self) -> str:
        return "adapter" if self.is_lora else "model"

    def _write_weights(self, folder: Path) -> None:
        if self.is_lora:
            self.model.save_pretrained(folder / "adapter")
        else:
            self.model.save_pretrained(folder / "model")
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(folder / "model")

    def _write_reference(self, folder: Path) -> None:
        from safetensors.torch import save_file, save_model

        if self.reference_adapter is not None:
            save_file({str(i): t.contiguous() for i, t in enumerate(self.reference_adapter)}, folder / "reference_adapter.safetensors")
        elif self.reference_model is not None and self.config.magnet_every:
            # a fixed reference is the initial model, rebuilt on resume; a magnet has moved
            save_model(self.reference_model, str(folder / "reference.safetensors"))

    def _read_average(self, path: Path) -> None:
        from safetensors.torch import load_file

        file = path / "average.safetensors"
        if not file.exists():
            raise ValueError(f"checkpoint {path} holds no policy average; it was saved by a run without policy_average=ema")
        state = load_file(file)
        if len(state) != len(self.average):
            raise ValueError(f"the policy average in {path} has {len(state)} tensors; this learner trains {len(self.average)}")
        self.average = [state[str(i)] for i in range(len(state))]

    def _read_reference(self, path: Path) -> None:
        from safetensors.torch import load_file, load_model

        if self.reference_adapter is not None and (path / "reference_adapter.safetensors").exists():
            state = load_file(path / "reference_adapter.safetensors")
            self.reference_adapter = [state[str(i)] for i in range(len(state))]
        elif self.reference_model is not None and (path / "reference.safetensors").exists():
            load_model(self.reference_model, str(path / "reference.safetensors"))


def choice_key(sample: TurnSample) -> tuple:
    """What a choice sample's forward pass depends on: its prompt and its candidates."""
    return (tuple(sample.prompt_ids), tuple(map(tuple, sample.choice_ids)))


def text_key(sample: TurnSample) -> tuple:
    """What a free-text sample's forward pass depends on: its prompt and its response."""
    return (tuple(sample.prompt_ids), tuple(sample.response_ids))


def micro_batches(samples: Sequence[TurnSample], indices: list[int], config: TrainConfig, *, shared: int | None = None) -> list[list[int]]:
    """Cut `indices` into micro-batches of at most `micro_batch_size` distinct prompts and
    at most `micro_batch_tokens` tokens through the model each (`forward_tokens`; a single
    larger prompt gets a micro-batch alone). `shared`: the length of a prefix run apart for
    all the micro-batches (`PrefixRun`), which the rows continue.

    Choice samples with the same prompt count as one prompt and always go into the same
    micro-batch (they share one forward pass, whatever their candidates: the parts of a
    chained answer), and so do free-text samples with the same prompt and response. The
    token budget bounds the activations a backward pass keeps (they grow with its tokens).
    Order of first appearance is kept when one pass holds them all; otherwise the passes
    are cut by `prefix_groups` from the prompts in sorted order, so each holds prompts that
    share a long prefix beyond `shared`, which its pass runs once (`extended_prefix`).
    """
    groups: dict[tuple, list[int]] = {}
    fed: dict[tuple, dict[tuple, None]] = {}
    for i in indices:
        sample = samples[i]
        key = ("choice", tuple(sample.prompt_ids)) if sample.is_choice else ("text", text_key(sample))
        groups.setdefault(key, []).append(i)
        answers = fed.setdefault(key, {})
        for answer in (sample.choice_ids if sample.is_choice else [sample.response_ids]):
            answers.setdefault(tuple(answer), None)
    keys = list(groups)
    rows = []
    for key in keys:
        answers = list(fed[key])
        rows.append((samples[groups[key][0]].prompt_ids, fed_tokens(answers) if key[0] == "choice" else max(len(answers[0]) - 1, 0)))
    if not rows:
        return []
    if len(rows) <= config.micro_batch_size and forward_tokens(rows, shared=shared) <= config.micro_batch_tokens:
        return [[i for key in keys for i in groups[key]]]
    passes = prefix_groups(
        [prompt for prompt, _ in rows], answers=[answer for _, answer in rows], max_rows=config.micro_batch_size,
        base=shared or 0, max_tokens=config.micro_batch_tokens, pass_cost=LEARNER_PASS_COST,
    )
    return [[i for k in sorted(members) for i in groups[keys[k]]] for members in passes]


LEARNER_PASS_COST = 100
"""Tokens a learner pass costs beyond its own (`prefix_groups`' ``pass_cost``): a forward
and a backward take about 150 ms on a 2-core CPU whatever their size, as long as some
100 tokens take."""


def forward_tokens(rows: Sequence[tuple[Sequence[int], int]], *, shared: int | None = None) -> int:
    """Tokens one forward pass puts through the model, for rows of (prompt ids, answer tokens
    fed after the prompt: the candidates' trie (`logprobs.fed_tokens`), or the response but
    its last token).

    As `trainers.generation.logprobs` lays a pass out: the prompts' common prefix once (when
    it is long enough to be run apart), then one row per prompt, every row padded to the
    widest. A game's prompts share their rules and differ in a short state, so this is what
    grows the activations, not the prompts' full lengths. `shared`: the length of a prefix
    run once before the passes (`PrefixRun`) instead of the rows' own common prefix; it
    still counts, since its activations stay held until the passes' gradients reach it.
    """
    if shared is None:
        shared = shared_prefix_length([prompt for prompt, _ in rows])
    return shared + len(rows) * max(len(prompt) - shared + answer for prompt, answer in rows)


def _entropy(log_policy: torch.Tensor) -> torch.Tensor:
    return -(log_policy.exp() * log_policy).sum()


def _wrap_lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
    )
    # peft draws the adapters' initial weights from torch's global generator; fork it so the
    # initialisation depends only on the seed and the caller's random state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return get_peft_model(model, lora)


def _old_logprobs(sample: TurnSample) -> torch.Tensor:
    expected = 1 if sample.is_choice else len(sample.response_ids)
    if len(sample.old_logprobs) != expected:
        raise ValueError(
            f"a {'choice' if sample.is_choice else 'free-text'} sample needs {expected} old log-probs, "
            f"got {len(sample.old_logprobs)} (env {sample.env_id!r}, game {sample.game_id}, role {sample.role})"
        )
    return torch.tensor(sample.old_logprobs, dtype=torch.float32)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _rng_state(shuffle_generator: torch.Generator) -> dict:
    """Every RNG state a run draws from, in types that ``torch.load(weights_only=True)`` accepts."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "shuffle": shuffle_generator.get_state(),
    }


def _set_rng_state(state: dict, shuffle_generator: torch.Generator) -> None:
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    shuffle_generator.set_state(state["shuffle"])


def _json_round_trips(value) -> bool:
    """True when JSON gives back an equal object (no tuples, no non-string keys, no custom types)."""
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


def _load_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    return state


def _load_full_weights(model, folder: Path) -> None:
    """Load a ``save_pretrained`` folder into ``model`` in place, exactly.

    ``save_pretrained`` leaves out tied weights (e.g. an output layer sharing the embedding),
    so a key may be missing only if its tensor is shared with one that was loaded.
    """
    state = _load_safetensors_folder(folder)
    result = model.load_state_dict(state, strict=False)
    current = model.state_dict()
    loaded_storage = {current[key].data_ptr() for key in state if key in current}
    untied = [key for key in result.missing_keys if current[key].data_ptr() not in loaded_storage]
    if result.unexpected_keys or untied:
        raise ValueError(
            f"checkpoint weights in {folder} do not match the model: "
            f"unexpected {result.unexpected_keys[:5]}, missing {untied[:5]}"
        )


def _load_adapter(model, folder: Path, trainable_tensors: int) -> None:
    from peft import set_peft_model_state_dict

    state = _load_safetensors_folder(folder)
    result = set_peft_model_state_dict(model, state)
    if result.unexpected_keys or len(state) != trainable_tensors:
        raise ValueError(
            f"adapter in {folder} does not match this learner's LoRA settings: {len(state)} tensors saved, "
            f"{trainable_tensors} trainable; unexpected {list(result.unexpected_keys)[:5]}"
        )
