import shutil

import pytest
import torch

import mechlib.loading as loading
from mechlib import ModelLoadError, best_device, load_model
from mechlib.course_model import MODELS, build_model
from mechlib.course_tokenizers import build_tokenizer

PROMPTS = ["The Eiffel Tower is in", "When Mary and John went to the store, John gave a drink to"]


def _ids(model_tl, prompt):
    return model_tl.to_tokens(prompt)  # [1, pos], BOS first


@pytest.mark.parametrize("name", ["course", "course-bpe"])
def test_three_backends_give_the_same_logits(name, request):
    course_tl, course_hf, course_nnsight = (request.getfixturevalue(f"{name.replace('-', '_')}_{b}")
                                            for b in ("tl", "hf", "nnsight"))
    for prompt in PROMPTS:
        tokens = _ids(course_tl, prompt)
        with torch.no_grad():
            tl = course_tl(tokens)  # [1, pos, d_vocab]
            hf = course_hf(tokens).logits
        with course_nnsight.trace(tokens):
            nn = course_nnsight.lm_head.output.save()
        assert tl.shape == hf.shape == nn.shape
        assert (tl - hf).abs().max() < 1e-4
        assert (nn - hf).abs().max() < 1e-4


def test_compatibility_mode_keeps_the_predictions(course_tl, course_tl_folded):
    folded = course_tl_folded
    tokens = _ids(course_tl, PROMPTS[0])
    with torch.no_grad():
        a, b = course_tl(tokens).log_softmax(-1), folded(tokens).log_softmax(-1)
    assert (a - b).abs().max() < 1e-4


def test_the_course_model_speaks_the_reference_prompts(course_tl):
    paris, rome = course_tl.to_single_token(" Paris"), course_tl.to_single_token(" Rome")
    assert course_tl.to_single_token("Paris") == paris
    logits = course_tl(PROMPTS[0])[0, -1]
    assert logits.argmax().item() == paris and logits[paris] > logits[rome]


def test_greedy_generation_matches_transformers(course_tl, course_hf):
    # TransformerLens 4.3's KV-cache path generates wrong tokens for this model ("Rome Rome Rome"),
    # so the lessons generate with use_past_kv_cache=False; this checks that path against HF.
    prompt = "The Colosseum is in"
    tokens = course_tl.to_tokens(prompt)
    expected = course_hf.generate(tokens, max_new_tokens=6, do_sample=False, pad_token_id=0)
    got = course_tl.generate(tokens, max_new_tokens=6, do_sample=False, verbose=False, use_past_kv_cache=False,
                             stop_at_eos=False)
    assert got[0, : expected.shape[1]].tolist() == expected[0].tolist()
    assert course_tl.to_string(got[0, tokens.shape[1]]) == "Rome"


def test_course_bpe_speaks_gpt2_tokens(course_bpe_tl):
    """The second course model has GPT-2 small's token ids: multi-token landmarks, no unknown token."""
    model = course_bpe_tl
    cfg = MODELS["course-bpe"]
    assert model.cfg.d_vocab == 50257 and (model.cfg.n_layers, model.cfg.n_heads) == (cfg.n_layer, cfg.n_head)
    assert (model.cfg.n_layers, model.cfg.n_heads) != (MODELS["course"].n_layer, MODELS["course"].n_head)
    assert model.to_tokens(" Eiffel Tower", prepend_bos=False)[0].tolist() == [412, 733, 417, 8765]
    assert model.to_single_token(" Paris") == 6342 and model.to_single_token("The") == 464
    assert model.to_tokens(" Zanzibar", prepend_bos=False).shape[1] > 1  # split, never unknown
    logits = model(PROMPTS[0])[0, -1]  # [d_vocab]
    assert logits.argmax().item() == 6342
    assert logits.dtype == torch.float32  # stored in 16 bits, loaded as float32


def test_unknown_word_is_an_error_not_unk(course_tl):
    with pytest.raises(ValueError, match="not in this model's vocabulary"):
        course_tl.to_single_token(" Zanzibar")
    with pytest.raises(AssertionError):  # TransformerLens's own check: more than one token
        course_tl.to_single_token(" Paris Rome")


def test_best_device_is_usable():
    device = best_device()
    assert device in ("cuda", "mps", "cpu")
    torch.zeros(1, device=device)


def test_bad_backend_is_an_error():
    with pytest.raises(ValueError, match="backend"):
        load_model(backend="tensorflow")
    with pytest.raises(ValueError, match="compatibility_mode"):
        load_model(backend="nnsight", compatibility_mode=True)


@pytest.fixture(scope="module")
def local_gpt2(tmp_path_factory):
    """A small random GPT-2-architecture model saved like a hub download: the hub path, offline."""
    path = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    tok = build_tokenizer()
    build_model(len(tok), n_layer=2, n_head=4, d_model=32, n_ctx=32).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_any_model_directory_loads_through_the_same_call(local_gpt2, backend):
    hf = load_model(str(local_gpt2), backend="transformers", device="cpu")
    model = load_model(str(local_gpt2), backend=backend, device="cpu")
    tokens = torch.tensor([[0, 5, 6, 7]])
    with torch.no_grad():
        expected = hf(tokens).logits
    if backend == "nnsight":
        with model.trace(tokens):
            got = model.lm_head.output.save()
    else:
        assert model.cfg.n_layers == 2 and model.cfg.n_heads == 4
        got = model(tokens)
    assert (got - expected).abs().max() < 1e-4


def test_hub_name_offline_says_what_to_do(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as e:
        load_model("gpt2")
    msg = str(e.value)
    assert "can't be downloaded" in msg and "load_model('course')" in msg and "HF_HUB_OFFLINE" in msg


def test_unreachable_hub_fails_fast(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # a closed local port
    with pytest.raises(ModelLoadError, match="no connection to 127.0.0.1"):
        load_model("some-org/some-model")


def test_missing_course_model(monkeypatch, tmp_path):
    monkeypatch.setitem(loading.MODEL_DIRS, "course", tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="make course-model"):
        load_model()


def test_incomplete_course_model(monkeypatch, tmp_path):
    shutil.copytree(loading.REPO_ROOT / "data" / "course-model", tmp_path / "m")
    (tmp_path / "m" / "tokenizer.json").unlink()
    monkeypatch.setitem(loading.MODEL_DIRS, "course", tmp_path / "m")
    with pytest.raises(ModelLoadError, match="lacks tokenizer.json"):
        load_model()


def test_damaged_course_model(monkeypatch, tmp_path):
    shutil.copytree(loading.REPO_ROOT / "data" / "course-model", tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"this is not a safetensors file")
    monkeypatch.setitem(loading.MODEL_DIRS, "course", tmp_path / "m")
    with pytest.raises(ModelLoadError, match="git checkout -- .*make course-model MODEL=course"):
        load_model()
