"""Words a model never trained on are named in a warning from every entry that takes a prompt, on both course models;
damaged files name themselves and how to restore them."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from mechlib import files, untrained
from mechlib.attribution import attribute
from mechlib.files import DamagedFileError
from mechlib.finetune import apply_changes
from mechlib.loading import REPO_ROOT, load_model, load_tokenizer
from mechlib.patching import logit_diff, patch
from mechlib.prompts import answer_ids, to_tokens
from mechlib.sae.io import load_sae
from mechlib.steering import generate, mean_activation
from mechlib.transcoders import transcoders_for
from mechlib.untrained import UntrainedTokenWarning

# An IOI sentence whose indirect object is a common name the corpus never uses: [UNK] on course, an untrained
# GPT-2 token on course-bpe. CORRUPTED, its corruption for patching, has the same token count and only trained words.
UNSEEN = "When Oscar and Mary went to the store, Mary gave a ring to"
KNOWN = "When John and Mary went to the store, Mary gave a ring to"
CORRUPTED = "When John and Mary went to the store, John gave a ring to"


@pytest.fixture(autouse=True)
def fresh_warnings():
    untrained._WARNED.clear()  # "once per prompt per process": each test starts a new process's worth
    yield
    untrained._WARNED.clear()


@pytest.fixture(params=["course", "course-bpe"])
def tl(request, course_tl, course_bpe_tl):
    return {"course": course_tl, "course-bpe": course_bpe_tl}[request.param]


def _untrained_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, UntrainedTokenWarning)]


def _one_warning_naming_oscar(record, name: str) -> None:
    found = _untrained_warnings(record)
    assert len(found) == 1, found
    assert "Oscar" in found[0] and name in found[0] and "IOI_NAMES" in found[0], found[0]


ENTRIES = {
    "TransformerLens to_tokens": lambda m: m.to_tokens(UNSEEN),
    "TransformerLens to_str_tokens": lambda m: m.to_str_tokens(UNSEEN),
    "mechlib to_tokens": lambda m: to_tokens(m, UNSEEN),
    "running": lambda m: m(UNSEEN),
    "run_with_cache": lambda m: m.run_with_cache(UNSEEN, names_filter="blocks.0.hook_resid_post"),
    "patching": lambda m: patch(m, UNSEEN, CORRUPTED, logit_diff(answer_ids(m, " John"), answer_ids(m, " Mary")),
                                "resid_pre"),
    "steering": lambda m: mean_activation(m, [UNSEEN], "blocks.1.hook_resid_pre"),
    "generation": lambda m: generate(m, UNSEEN, n=1),
}


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_every_entry_that_takes_a_prompt_names_the_untrained_word_once(tl, entry):
    name = tl.tokenizer.mechlib_model_name
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ENTRIES[entry](tl)
        ENTRIES[entry](tl)  # the same prompt again: no second warning
    _one_warning_naming_oscar(record, name)


def test_attribution_warns_about_its_prompt(tl):
    name = tl.tokenizer.mechlib_model_name
    tcs = transcoders_for(tl, name, progress=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        attribute(tl, tcs, UNSEEN, max_logits=1)
    _one_warning_naming_oscar(record, name)


def test_token_ids_are_checked_too(tl):
    with pytest.warns(UntrainedTokenWarning):
        ids = tl.to_tokens(UNSEEN)  # warns once for the text ...
    untrained._WARNED.clear()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        to_tokens(tl, ids)  # ... and ids that hold the untrained token warn by themselves
    assert len(_untrained_warnings(record)) == 1


def test_nnsight_traces_and_the_plain_tokenizer_warn(course_nnsight, course_bpe_nnsight):
    for name, model in (("course", course_nnsight), ("course-bpe", course_bpe_nnsight)):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            with model.trace(UNSEEN):
                model.output.save()
        _one_warning_naming_oscar(record, name)
        untrained._WARNED.clear()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            load_tokenizer(name)(UNSEEN)
        _one_warning_naming_oscar(record, name)


def test_a_trained_prompt_gives_no_warning(tl):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tl(KNOWN)
        to_tokens(tl, tl.to_tokens(KNOWN))
    assert _untrained_warnings(record) == []


def test_the_warning_points_at_the_learners_line(course_tl):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        course_tl(UNSEEN)
    assert [w.filename for w in record if issubclass(w.category, UntrainedTokenWarning)] == [__file__]


def test_other_models_are_not_checked():
    """A model without trained_tokens.json (GPT-2, any hub model) trained every token: no check."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(REPO_ROOT / "data" / "course-bpe")
    untrained.watch(tokenizer, "some/hub-model", "some/hub-model")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tokenizer(UNSEEN)
    assert _untrained_warnings(record) == []


def test_trained_words_lists_the_corpus_names(course_tl, course_bpe_tl):
    assert "Mary" in untrained.trained_words(course_tl) and "Oscar" not in untrained.trained_words(course_tl)
    words = untrained.trained_words(course_bpe_tl)
    assert " Mary" in words and " Oscar" not in words


# --- damaged files ---

def _truncate(path, keep: int = 200) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """A copy of data/ (what the checks touch) in a fake repository, so that damaging it spares the real one."""
    root = tmp_path / "repo"
    for sub in ("saes/L2-topk-8x", "transcoders/course/L1", "finetuned/course"):
        shutil.copytree(REPO_ROOT / "data" / sub, root / "data" / sub)
    monkeypatch.setattr(files, "REPO_ROOT", root)
    return root / "data"


@pytest.mark.parametrize("what, path, remake", [
    ("SAE weights", "saes/L2-topk-8x/sae_weights.safetensors", "make saes"),
    ("transcoder weights", "transcoders/course/L1/sae_weights.safetensors", "make transcoders MODEL=course"),
])
def test_a_truncated_weights_file_names_itself_and_how_to_restore_it(shipped_copy, what, path, remake):
    _truncate(shipped_copy / path)
    with pytest.raises(DamagedFileError) as e:
        load_sae((shipped_copy / path).parent)
    message = str(e.value)
    assert str(shipped_copy / path) in message and f"git checkout -- data/{path}" in message and remake in message


def test_a_malformed_cfg_json_names_itself(shipped_copy):
    cfg = shipped_copy / "saes" / "L2-topk-8x" / "cfg.json"
    cfg.write_text(cfg.read_text()[:-40])
    with pytest.raises(DamagedFileError, match="cfg.json is damaged .*git checkout -- data/saes/L2-topk-8x/cfg.json"):
        load_sae(cfg.parent)


def test_a_truncated_finetune_names_itself(shipped_copy):
    path = shipped_copy / "finetuned" / "course" / "changes.safetensors"
    _truncate(path, 4000)
    with pytest.raises(DamagedFileError) as e:
        apply_changes(load_model("course", backend="transformers", device="cpu"), path.parent)
    assert "changes.safetensors is damaged" in str(e.value)
    assert "python -m mechlib.finetune --model course" in str(e.value)


def test_a_damaged_file_in_the_cache_says_to_delete_and_rerun(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHLIB_CACHE", str(tmp_path / "cache"))
    sae = tmp_path / "cache" / "saes" / "gpt2" / "blocks.6.hook_resid_post"
    sae.mkdir(parents=True)
    (sae / "cfg.json").write_text("{not json")
    (sae / "sae_weights.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(DamagedFileError, match=f"delete {sae} and run again"):
        load_sae(sae)


def test_the_real_shipped_files_read(course_tl):
    """The checks refuse only damaged files: the shipped ones read, and their hints point at real commands."""
    assert load_sae(REPO_ROOT / "data" / "saes" / "L2-topk-8x").cfg.d_in == course_tl.cfg.d_model
    assert json.loads((REPO_ROOT / "data" / "saes" / "L2-topk-8x" / "cfg.json").read_text())
    makefile = (REPO_ROOT / "Makefile").read_text()
    for remake in files.REMAKE.values():
        target = remake.strip("`").split()
        assert target[0] != "make" or f"\n{target[1]}:" in makefile, remake


def test_mechlibs_own_corpus_stream_is_no_prompt(course_tl):
    """The SAE token stream encodes corpus documents word by word, as the course models were trained, so a random
    span's punctuation side by side ("..", which the course model's tokenizer makes [UNK] in text) stays two "."
    tokens; and a learner who typed nothing is not warned."""
    from mechlib.course_tokenizers import word_encoder
    from mechlib.sae.store import corpus_token_batches

    from mechlib.corpus import Document

    stream, doc = corpus_token_batches(course_tl, batch_size=8), Document("induction")
    doc.add(["Paris", ".", ".", "Rome"], "random", "induction")  # a random span's "Paris.. Rome"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ids = stream.encode(doc)
        assert ids == word_encoder(course_tl.tokenizer)(doc.words) and course_tl.tokenizer.unk_token_id not in ids
        next(stream)
    assert _untrained_warnings(record) == []
    with pytest.warns(UntrainedTokenWarning, match=r"'\.\.'"):  # the same text from a learner is a prompt
        course_tl.to_tokens(doc.text)
