"""Generation: the backend protocol, its engines, and the log-probs training recomputes.

    base.py                  GenerationBackend (generate, score_choices), Generation, token layout
    transformers_backend.py  the in-process engine (default; CPU or GPU)
    vllm_backend.py          vLLM in its own environment, behind a worker process (vllm_worker.py); import it directly
    logprobs.py              sequence / candidate log-probs with gradients (the learner's side)
"""

from trainers.generation.base import (
    Generation,
    GenerationBackend,
    Prompt,
    default_stop_token_ids,
    encode_choice,
    encode_prompts,
)
from trainers.generation.logprobs import candidate_logprobs, sequence_logprobs
from trainers.generation.transformers_backend import TransformersBackend, generate, score_choices

__all__ = [
    "Generation",
    "GenerationBackend",
    "Prompt",
    "TransformersBackend",
    "candidate_logprobs",
    "default_stop_token_ids",
    "encode_choice",
    "encode_prompts",
    "generate",
    "score_choices",
    "sequence_logprobs",
]
