import torch

from mechlib.sae import SAEConfig, StandardSAE, fvu, l0, train_sae


def test_shapes_follow_the_sae_lens_layout():
    sae = StandardSAE(SAEConfig(d_in=6, d_sae=24))
    assert sae.W_enc.shape == (6, 24) and sae.W_dec.shape == (24, 6)
    assert sae.b_enc.shape == (24,) and sae.b_dec.shape == (6,)
    x = torch.randn(5, 6)
    x_hat, z = sae(x)
    assert x_hat.shape == (5, 6) and z.shape == (5, 24) and (z >= 0).all()


def test_input_is_centred_by_the_decoder_bias():
    sae = StandardSAE(SAEConfig(d_in=4, d_sae=8))
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(4))
        sae.b_enc.fill_(-0.1)
    z = sae.encode(sae.b_dec[None])  # the "centre" of the data: nothing fires
    assert (z == 0).all()


def test_decoder_directions_are_renormalised_after_each_step():
    sae = StandardSAE(SAEConfig(d_in=4, d_sae=8))
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.after_step()
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(8))


def test_loss_is_reconstruction_plus_l1():
    sae = StandardSAE(SAEConfig(d_in=4, d_sae=8, l1_coefficient=0.5))
    x = torch.randn(16, 4)
    loss, parts = sae.loss(x)
    x_hat, z = sae(x)
    assert torch.allclose(parts["mse"], ((x_hat - x) ** 2).sum(-1).mean())
    assert torch.allclose(parts["sparsity"], 0.5 * z.sum(-1).mean())
    assert torch.allclose(loss, parts["mse"] + parts["sparsity"])


def test_metrics():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert fvu(x, x).item() == 0 and fvu(x, torch.zeros_like(x)).item() == 1
    assert l0(torch.tensor([[0.0, 2.0, 1.0], [0.0, 0.0, 0.0]])).item() == 1.0


def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def test_training_recovers_sparse_directions():
    """16 directions in 8 dimensions (two orthonormal bases), each present 4% of the time: training
    aligns the decoder with them, far beyond where it starts."""
    truth = torch.cat([torch.eye(8), _hadamard(8) / 8**0.5])  # [feature, d_in]
    g = torch.Generator().manual_seed(0)

    def batch() -> torch.Tensor:
        mask = torch.rand(1024, 16, generator=g) < 0.04
        return (torch.rand(1024, 16, generator=g) * mask) @ truth  # [batch, d_in]

    def mmcs(sae) -> float:
        directions = torch.nn.functional.normalize(sae.W_dec.detach(), dim=-1)  # [d_sae, d_in]
        return (truth @ directions.T).max(1).values.mean().item()

    sae = StandardSAE(SAEConfig(d_in=8, d_sae=32, l1_coefficient=0.2))
    before = mmcs(sae)
    history = train_sae(sae, batch, steps=1500, lr=3e-3, progress=False)
    assert history[0]["FVU"] > 1 and history[-1]["FVU"] < 0.1
    assert history[-1]["L0"] < 2  # 0.64 features per input: sparse codes
    assert before < 0.8 and mmcs(sae) > 0.95, (before, mmcs(sae))
