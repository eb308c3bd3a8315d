"""The learner: PPO updates of a causal LM on turn samples, and atomic, resumable checkpoints.

One ``update(samples)`` is CleanRL's inner loop: for each of ``epochs`` passes, shuffle the
samples (with the learner's own seeded generator), cut them into mini-batches (one optimizer
step each) and those into micro-batches (one forward/backward each, gradients accumulated),
compute the clipped surrogate of ``trainers.loss`` and step AdamW after gradient-norm
clipping.

Old log-probs: the loss's ratio is ``pi_new / pi_old`` with ``pi_old`` the log-probs recorded
at rollout (``sample.old_logprobs``). The rollout policy is the policy at the start of the
update, so on the first mini-batch of the first epoch the ratio is 1 and clipping starts to
matter only once the weights have moved. ``recompute_old_logprobs`` (SPIRAL does it) replaces
the rollout's numbers with the trainer's own forward pass, for generation backends (vLLM,
another dtype) whose log-probs differ numerically from the trainer's.

The model stays in eval mode while training: dropout would make the trainer's log-probs a
different (random) function from the rollout's, and the first ratio would not be 1.

Reference for the KL term (``kl_coef > 0``): with LoRA, the same model with its adapters
disabled (no second copy in memory); with full fine-tuning, a frozen copy made at start.
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainers.generation import candidate_logprobs, sequence_logprobs
from trainers.loss import LENGTH_NORMS, pad_logprobs, ppo_clipped_loss
from trainers.samples import TurnSample

CHECKPOINT_PREFIX = "step_"
CHECKPOINT_FORMAT = 1
_TEMP_PREFIX = ".tmp-"
_META = "meta.json"
_LOSS_METRICS = ("loss", "clip_fraction", "approx_kl", "ratio_mean", "kl_ref")


@dataclass
class LearnerConfig:
    """Every hyperparameter of the update, with SPIRAL-like defaults where they apply."""

    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this before each step; None: no clipping."""
    epochs: int = 2
    """PPO passes over each batch (SPIRAL: 2)."""
    mini_batch_size: int | None = None
    """Samples per optimizer step; None: the whole batch is one step per epoch."""
    micro_batch_size: int = 8
    """Samples per forward/backward pass; gradients are accumulated over a mini-batch."""
    clip: float = 0.2
    length_norm: str = "constant"
    max_length: int | None = None
    """The constant of ``length_norm="constant"`` (the generation budget, e.g. max_new_tokens);
    None: the longest response of the batch given to ``update``, constant within an update.
    A choice sample counts as one token, so in a batch mixing modes it weighs 1/max_length
    of a full-length free-text answer."""
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    """Weight of the exact candidate entropy bonus (choice-mode samples only)."""
    lora_rank: int = 0
    """0: full fine-tuning; otherwise the LoRA rank."""
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    recompute_old_logprobs: bool = False
    seed: int = 0
    """Seeds the mini-batch shuffling and the LoRA initialisation."""

    def validate(self) -> None:
        if self.length_norm not in LENGTH_NORMS:
            raise ValueError(f"length_norm must be one of {', '.join(LENGTH_NORMS)}, got {self.length_norm!r}")
        for name in ("epochs", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.mini_batch_size is not None and self.mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be at least 1 or None, got {self.mini_batch_size}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be at least 1 or None, got {self.max_length}")
        if self.lora_rank < 0 or self.lr <= 0 or self.clip <= 0 or self.kl_coef < 0:
            raise ValueError("lora_rank and kl_coef must be >= 0; lr and clip must be > 0")


class Learner:
    """Holds the policy (optionally LoRA-wrapped), its optimizer and the shuffling generator.

    ``learner.model`` is the policy to roll out with (a ``peft.PeftModel`` under LoRA); it is
    updated in place, so a generation backend holding it samples from the new weights.
    ``tokenizer``, if given, is saved in full-weight checkpoints so that their ``model``
    folder loads with ``trainers.models.load_model(path)``.
    """

    def __init__(self, model, config: LearnerConfig | None = None, *, tokenizer=None):
        self.config = config or LearnerConfig()
        self.config.validate()
        self.tokenizer = tokenizer
        self.is_lora = self.config.lora_rank > 0
        self.model = _wrap_lora(model, self.config) if self.is_lora else model
        self.model.eval()
        self.reference_model = None
        if self.config.kl_coef > 0 and not self.is_lora:
            self.reference_model = copy.deepcopy(self.model).requires_grad_(False)
        self.trainable_parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable_parameters,
            lr=self.config.lr,
            betas=tuple(self.config.betas),
            eps=self.config.adam_eps,
            weight_decay=self.config.weight_decay,
        )
        self.shuffle_generator = torch.Generator().manual_seed(self.config.seed)

    # ---- log-probs -------------------------------------------------------------------

    def policy_logprobs(self, samples: Sequence[TurnSample]) -> list[torch.Tensor]:
        """The current policy's log-probs of what each sample did, with gradients.

        Free text: one value per response token, ``log pi(response_t | prompt, response_<t)``.
        Choice: a single value, ``log softmax_j(log pi(candidate_j | prompt))[choice_index]``,
        the candidates' sequence log-probs normalised over the legal candidates.
        """
        return self._logprobs(self.model, samples)[0]

    def recompute_old_logprobs(self, samples: list[TurnSample]) -> list[TurnSample]:
        """Overwrite ``sample.old_logprobs`` with this model's log-probs (no gradients); returns samples."""
        with torch.no_grad():
            for batch in _chunks(list(samples), self.config.micro_batch_size):
                for sample, values in zip(batch, self._logprobs(self.model, batch)[0]):
                    sample.old_logprobs = values.tolist()
        return samples

    def _reference_logprobs(self, samples: Sequence[TurnSample]) -> list[torch.Tensor]:
        with torch.no_grad():
            rows = []
            for batch in _chunks(list(samples), self.config.micro_batch_size):
                if self.is_lora:
                    with self.model.disable_adapter():
                        rows.extend(self._logprobs(self.model, batch)[0])
                else:
                    rows.extend(self._logprobs(self.reference_model, batch)[0])
            return rows

    def _logprobs(self, model, samples: Sequence[TurnSample]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Log-probs of each sample (see ``policy_logprobs``) and the candidate entropy of each choice sample.

        All free-text rows go through one forward pass, and all candidates of all choice
        samples through another (one row per prompt + candidate).
        """
        result: list[torch.Tensor | None] = [None] * len(samples)
        entropies = []
        text = [i for i, s in enumerate(samples) if not s.is_choice]
        if text:
            values = sequence_logprobs(
                model, [samples[i].prompt_ids for i in text], [samples[i].response_ids for i in text]
            )
            for i, value in zip(text, values):
                result[i] = value
        choice = [i for i, s in enumerate(samples) if s.is_choice]
        if choice:
            # Small games repeat prompts (Kuhn Poker has 12 information states), so each
            # distinct (prompt, candidates) is scored once and shared by its samples; the
            # gradient is the same as scoring every sample on its own.
            distinct: dict[tuple, int] = {}
            for i in choice:
                key = (tuple(samples[i].prompt_ids), tuple(map(tuple, samples[i].choice_ids)))
                distinct.setdefault(key, len(distinct))
            scores = candidate_logprobs(model, [list(p) for p, _ in distinct], [c for _, c in distinct])
            log_policies = [torch.log_softmax(values, dim=0) for values in scores]
            for i in choice:
                key = (tuple(samples[i].prompt_ids), tuple(map(tuple, samples[i].choice_ids)))
                log_policy = log_policies[distinct[key]]
                result[i] = log_policy[samples[i].choice_index].reshape(1)
                entropies.append(-(log_policy.exp() * log_policy).sum())
        return result, entropies

    # ---- update ----------------------------------------------------------------------

    def update(self, samples: list[TurnSample]) -> dict[str, float]:
        """Run ``epochs`` x shuffled mini-batches of PPO on ``samples``; return the metrics.

        Metrics: ``loss``, ``clip_fraction``, ``approx_kl``, ``ratio_mean`` (and ``kl_ref`` with
        a reference) averaged over micro-batches weighted by their sample counts;
        ``grad_norm`` (before clipping, mean over optimizer steps); ``entropy_choice`` (exact
        entropy over the candidates, mean over choice samples) and ``neg_logprob`` (mean
        -log pi of the sampled response tokens, an estimate of the per-token entropy) from
        the first pass; ``samples``, ``tokens`` (response tokens per pass),
        ``optimizer_steps``, ``time_s``. An empty batch changes nothing and consumes no
        randomness, so skipping a step keeps runs reproducible.
        """
        start_time = time.perf_counter()
        if not samples:
            return {"samples": 0.0, "tokens": 0.0, "optimizer_steps": 0.0, "time_s": 0.0}
        config = self.config
        if config.recompute_old_logprobs:
            self.recompute_old_logprobs(samples)
        old = [_old_logprobs(sample) for sample in samples]
        advantages = torch.tensor([float(s.advantage) for s in samples], dtype=torch.float32)
        reference = self._reference_logprobs(samples) if config.kl_coef > 0 else None
        width = config.max_length or max(row.numel() for row in old)
        mini_size = config.mini_batch_size or len(samples)

        totals = dict.fromkeys(_LOSS_METRICS, 0.0)
        weight = 0
        grad_norms = []
        entropies, neg_logprob_sum, text_tokens = [], 0.0, 0
        for epoch in range(config.epochs):
            order = torch.randperm(len(samples), generator=self.shuffle_generator).tolist()
            for mini in _chunks(order, mini_size):
                self.optimizer.zero_grad(set_to_none=True)
                for micro in _chunks(mini, config.micro_batch_size):
                    batch = [samples[i] for i in micro]
                    rows, batch_entropies = self._logprobs(self.model, batch)
                    new, mask = pad_logprobs(rows)
                    old_padded, _ = pad_logprobs([old[i] for i in micro], new.shape[1])
                    ref_padded = None
                    if reference is not None:
                        ref_padded, _ = pad_logprobs([reference[i] for i in micro], new.shape[1])
                    loss, metrics = ppo_clipped_loss(
                        new,
                        old_padded.to(new.device),
                        advantages[micro].to(new.device),
                        mask,
                        clip=config.clip,
                        length_norm=config.length_norm,
                        max_length=width,
                        ref_logprobs=ref_padded,
                        kl_coef=config.kl_coef,
                    )
                    if config.entropy_coef and batch_entropies:
                        # choice mode: exact entropy over the legal candidates; the bonus keeps
                        # self-play from collapsing onto one card-blind action (entropy-
                        # regularised play converges towards a quantal-response equilibrium)
                        bonus = torch.stack(batch_entropies).sum() / len(micro)
                        loss = loss - config.entropy_coef * bonus
                    # Weighting each micro-batch by its share of the mini-batch makes the
                    # accumulated gradient that of the mini-batch's loss (both length norms
                    # average over samples), whatever the micro-batch sizes.
                    (loss * (len(micro) / len(mini))).backward()
                    for name, value in metrics.items():
                        totals[name] += value * len(micro)
                    weight += len(micro)
                    if epoch == 0:
                        entropies.extend(e.detach() for e in batch_entropies)
                        for sample, row in zip(batch, rows):
                            if not sample.is_choice:
                                neg_logprob_sum -= row.detach().sum().item()
                                text_tokens += row.numel()
                max_norm = config.max_grad_norm if config.max_grad_norm is not None else math.inf
                grad_norms.append(torch.nn.utils.clip_grad_norm_(self.trainable_parameters, max_norm).item())
                self.optimizer.step()

        result = {name: totals[name] / weight for name in _LOSS_METRICS if name != "kl_ref" or reference is not None}
        result["grad_norm"] = sum(grad_norms) / len(grad_norms)
        if entropies:
            result["entropy_choice"] = torch.stack(entropies).mean().item()
        if text_tokens:
            result["neg_logprob"] = neg_logprob_sum / text_tokens
        result["samples"] = float(len(samples))
        result["tokens"] = float(sum(row.numel() for row in old))
        result["optimizer_steps"] = float(len(grad_norms))
        result["time_s"] = time.perf_counter() - start_time
        return result

    # ---- checkpoints -----------------------------------------------------------------

    def save_checkpoint(
        self, directory, step: int, extra_state: dict | None = None, *, keep_last: int | None = 3
    ) -> Path:
        """Write ``directory/step_<step>`` atomically and keep the newest ``keep_last`` checkpoints.

        Contents: the model weights (``model/``, a Hugging Face folder) or, under LoRA, only the
        adapter (``adapter/``, a peft folder); the optimizer state; the python, numpy, torch
        and shuffling RNG states; ``extra_state`` (RAE baselines, curriculum, step, ...: JSON
        when it round-trips exactly, else pickle); and ``meta.json``.

        Atomicity: everything is written into a temporary sibling folder, flushed to disk
        (fsync of every file and folder) and only then renamed to its final name, so a crash
        at any point leaves either the complete checkpoint or none; leftovers of crashed
        saves are hidden (dot-prefixed), ignored by ``latest_checkpoint`` and removed by the
        next save. A single writer per directory is assumed.
        """
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be at least 1 or None (keep all), got {keep_last}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(f"{_TEMP_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        final = directory / f"{CHECKPOINT_PREFIX}{step:08d}"
        staging = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{final.name}-", dir=directory))
        try:
            staging.chmod(0o755)  # mkdtemp makes it private; a checkpoint is an ordinary folder
            self._write_checkpoint(staging, step, extra_state or {})
            _fsync_tree(staging)
            if final.exists():
                # Re-saving a step (a run resumed from an older checkpoint): move the old copy
                # aside under a hidden name first, because rename cannot replace a folder.
                stale = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}old-", dir=directory))
                os.replace(final, stale / final.name)
            os.rename(staging, final)
            _fsync_dir(directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for leftover in directory.glob(f"{_TEMP_PREFIX}old-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if keep_last is not None:
            for old_checkpoint in list_checkpoints(directory)[:-keep_last]:
                shutil.rmtree(old_checkpoint)
        return final

    def _write_checkpoint(self, folder: Path, step: int, extra_state: dict) -> None:
        if self.is_lora:
            self.model.save_pretrained(folder / "adapter")
        else:
            self.model.save_pretrained(folder / "model")
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(folder / "model")
        torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(_rng_state(self.shuffle_generator), folder / "rng.pt")
        if _json_round_trips(extra_state):
            (folder / "extra_state.json").write_text(json.dumps(extra_state))
        else:
            (folder / "extra_state.pkl").write_bytes(pickle.dumps(extra_state))
        meta = {"format": CHECKPOINT_FORMAT, "step": step, "weights": "adapter" if self.is_lora else "model"}
        (folder / _META).write_text(json.dumps(meta))

    def load_checkpoint(self, path) -> dict:
        """Restore weights (or adapter), optimizer and every RNG state from ``path``; return its extra state.

        Loading a pickled extra state runs pickle: load only checkpoints you (or your runs) wrote.
        """
        path = Path(path)
        meta = json.loads((path / _META).read_text())
        expected = "adapter" if self.is_lora else "model"
        if meta["weights"] != expected:
            raise ValueError(
                f"checkpoint {path} holds {meta['weights']} weights but this learner trains "
                f"{'a LoRA adapter' if self.is_lora else 'the full model'}; set lora_rank to match the saved run"
            )
        if self.is_lora:
            _load_adapter(self.model, path / "adapter", len(self.trainable_parameters))
        else:
            _load_full_weights(self.model, path / "model")
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        _set_rng_state(torch.load(path / "rng.pt", weights_only=True), self.shuffle_generator)
        if (path / "extra_state.json").exists():
            return json.loads((path / "extra_state.json").read_text())
        return pickle.loads((path / "extra_state.pkl").read_bytes())


def list_checkpoints(directory) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (by step)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [
        child
        for child in directory.iterdir()
        if child.name.startswith(CHECKPOINT_PREFIX) and child.name[len(CHECKPOINT_PREFIX) :].isdigit()
        # Renames are atomic, so a named folder is complete; meta.json (written last) also
        # guards against folders copied into place by other means.
        and (child / _META).is_file()
    ]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(directory) -> Path | None:
    """The newest complete checkpoint in ``directory``, or None."""
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def checkpoint_step(path) -> int:
    """The training step a checkpoint was saved at."""
    return int(Path(path).name[len(CHECKPOINT_PREFIX) :])


def _wrap_lora(model, config: LearnerConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
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
    return [items[i : i + size] for i in range(0, len(items), size)]


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


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` to disk, so the rename publishes durable data."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
