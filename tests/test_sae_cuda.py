"""The SAE code on a GPU: every architecture and remedy, the activation store, checkpoints, files and
metrics with the model and the SAE on CUDA. Skipped where there is no GPU (CI); run on a GPU machine
with `pytest tests/test_sae_cuda.py`."""

import pytest
import torch

from mechlib import load_model
from mechlib.sae import ARCHITECTURES, ActivationStore, InMemoryActivations, SAEConfig, Trainer, TrainConfig, make_sae
from mechlib.sae.io import load_sae, save_sae
from mechlib.sae.metrics import evaluate_sae
from mechlib.sae.store import corpus_token_batches

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
HOOK = "blocks.2.hook_resid_post"


@pytest.fixture(scope="module")
def model_cuda():
    return load_model("course", device="cuda")


@pytest.mark.parametrize("remedy", ["none", "resample", "ghost_grads"])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_and_remedy_trains_on_cuda(arch, remedy):
    g = torch.Generator().manual_seed(0)
    data = InMemoryActivations(torch.randn(4096, 16, generator=g).cuda(), batch_size=256)
    sae = make_sae(SAEConfig(d_in=16, d_sae=64, architecture=arch, k=4, l1_coefficient=5.0)).cuda()
    trainer = Trainer(sae, data, TrainConfig(steps=30, remedy=remedy, dead_after=5, resample_every=10,
                                             resample_inputs=512))
    history = trainer.run(progress=False)
    assert sae.W_dec.device.type == "cuda" and trainer.since_fired.device.type == "cuda"
    assert torch.isfinite(torch.tensor(history[-1]["loss"]))


def test_store_training_resume_files_and_metrics_on_cuda(model_cuda, tmp_path):
    def store():
        return ActivationStore(model_cuda, HOOK, batch_size=256, buffer_size=2048, seed=3, normalize=True)

    def sae():
        return make_sae(SAEConfig(d_in=128, d_sae=512, architecture="topk", k=8,
                                  metadata={"model_name": "course", "hook_name": HOOK})).cuda()

    s = store()
    assert s.next_batch().device.type == "cuda"
    straight = Trainer(sae(), store(), TrainConfig(steps=20))
    straight.run(progress=False)
    first = Trainer(sae(), store(), TrainConfig(steps=10))
    first.run(progress=False)
    first.save_checkpoint(tmp_path / "c.pt")
    resumed = Trainer.resume(tmp_path / "c.pt", store())  # on the store's device
    assert resumed.sae.W_dec.device.type == "cuda"
    resumed.cfg.steps = 20
    resumed.run(progress=False)
    for name, value in straight.sae.state_dict().items():
        assert torch.allclose(value, resumed.sae.state_dict()[name], atol=1e-5), name

    straight.sae.fold_input_scale(s.scale)
    save_sae(straight.sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae", model_cuda)  # lands on the model's device
    assert loaded.W_dec.device.type == "cuda"
    tokens = next(corpus_token_batches(model_cuda, 4, seed=1))
    on_gpu = evaluate_sae(loaded, model_cuda, HOOK, tokens)
    on_cpu = evaluate_sae(load_sae(tmp_path / "sae", device="cpu"), model_cuda, HOOK, tokens)
    assert 0 < on_gpu["FVU"] < 1 and abs(on_gpu["FVU"] - on_cpu["FVU"]) < 1e-3
