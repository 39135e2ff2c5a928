"""The committed course model meets the issue's targets, and the training script reproduces itself."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mechlib import load_model
from mechlib.course_model import TARGETS, TrainConfig, evaluate, report, train
from mechlib.loading import COURSE_MODEL_DIR


@pytest.fixture(scope="module")
def measured():
    return evaluate()


def test_factual_recall(measured):
    assert measured["fact_accuracy"] >= 0.95
    assert measured["n_fact_prompts"] >= 200


def test_ioi(measured):
    assert measured["n_ioi_prompts"] >= 200
    assert measured["ioi_accuracy"] >= 0.95
    assert measured["ioi_logit_diff"] >= 2.5


def test_induction(measured):
    assert measured["induction_loss_second"] <= 0.25 * measured["induction_loss_first"]
    assert measured["induction_loss_first"] > 3.0  # the first copy really is unpredictable
    assert measured["max_induction_score"] >= 0.5 and measured["induction_heads"]
    assert measured["max_prev_token_score"] >= 0.5 and measured["prev_token_heads"]


def test_size(measured):
    assert measured["weights_mb"] <= 20
    assert measured["n_layers"] >= 2 and measured["n_heads"] >= 4


def test_report_says_all_targets_are_met(measured):
    table, ok = report(measured)
    assert ok, table
    assert table.count("yes") == len(TARGETS) + 1


def test_model_card_holds_the_measured_numbers(measured):
    saved = json.loads((COURSE_MODEL_DIR / "evaluation.json").read_text())
    for k in TARGETS:
        assert saved[k] == pytest.approx(measured[k], abs=1e-3), k
    card = (COURSE_MODEL_DIR / "README.md").read_text()
    table, _ = report(saved)
    assert table in card


def test_training_is_seeded_and_saves_a_loadable_model(tmp_path):
    cfg = dict(steps=8, batch_size=4, n_layer=2, n_head=4, d_model=32, n_ctx=32, seed=3)
    a = train(TrainConfig(out_dir=str(tmp_path / "a"), **cfg), progress=False)
    train(TrainConfig(out_dir=str(tmp_path / "b"), **cfg), progress=False)
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["tokens_seen"] == 8 * 4 * 32
    model = load_model(str(tmp_path / "a"), device="cpu")
    assert model.cfg.n_layers == 2 and model.cfg.n_heads == 4


def test_training_lowers_the_loss(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), steps=300, batch_size=8, n_layer=1, n_head=4, d_model=32, n_ctx=32)
    info = train(cfg, progress=False)
    assert info["initial_loss"] > 5.5  # about ln(433): a uniform guess over the vocabulary
    assert info["final_loss"] < info["initial_loss"] - 1.5
