import pytest
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
    x = batch()
    assert fvu(x, sae(x)[0]) > 1
    history = train_sae(sae, batch, steps=1500, lr=3e-3, progress=False)
    assert history[-1]["FVU"] < 0.1
    assert history[-1]["L0"] < 2  # 0.64 features per input: sparse codes
    assert before < 0.8 and mmcs(sae) > 0.95, (before, mmcs(sae))


# ---------------------------------------------------------------- architectures

from mechlib.sae import (ARCHITECTURES, ActivationStore, BatchTopKSAE, InMemoryActivations, JumpReLUSAE,  # noqa: E402
                         TopKSAE, Trainer, TrainConfig, make_sae)
from mechlib.sae.dead import ghost_grads_loss, resample_dead_latents  # noqa: E402
from mechlib.sae.io import load_sae, save_sae  # noqa: E402
from mechlib.sae.store import corpus_token_batches  # noqa: E402


def _sae(arch: str, d_in: int = 8, d_sae: int = 32, **kw):
    return make_sae(SAEConfig(d_in=d_in, d_sae=d_sae, architecture=arch, **kw))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_trains_and_reconstructs(arch):
    g = torch.Generator().manual_seed(1)
    truth = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=-1)

    def batch():
        return (torch.rand(256, 16, generator=g) * (torch.rand(256, 16, generator=g) < 0.1)) @ truth

    sae = _sae(arch, k=3, l1_coefficient=0.05, l0_coefficient=0.01)
    x = batch()
    before = fvu(x, sae(x)[0]).item()
    history = train_sae(sae, batch, steps=300, lr=3e-3, progress=False)
    sae.eval()
    x = batch()
    x_hat, z = sae(x)
    assert (z >= 0).all() and x_hat.shape == x.shape
    assert fvu(x, x_hat).item() < 0.5 * before, (before, history[-1])


def test_topk_keeps_exactly_k_per_input():
    sae = _sae("topk", k=5)
    z = sae.encode(torch.randn(10, 8) * 3)
    assert ((z > 0).sum(-1) <= 5).all() and (z > 0).sum() > 30


def test_batchtopk_keeps_k_per_input_on_average_and_learns_a_threshold():
    sae = _sae("batchtopk", k=4)
    sae.train()
    x = torch.randn(64, 8) * 3
    z = sae.encode(x)
    assert (z > 0).sum() == 4 * 64 and (z > 0).sum(-1).float().std() > 0  # per input it varies
    assert sae.threshold > 0  # moved towards the smallest kept activation
    sae.eval()
    pre = sae.pre_activation(x)
    assert torch.equal(sae.encode(x), torch.relu(pre) * (pre > sae.threshold))


def test_jumprelu_gates_at_the_threshold_and_trains_it():
    sae = _sae("jumprelu", threshold_init=0.5, bandwidth=0.2)
    x = torch.randn(128, 8)
    pre = sae.pre_activation(x)
    z = sae.encode(x)
    assert torch.equal(z, pre * (pre > 0.5))
    loss, parts = sae.loss(x)
    loss.backward()
    assert sae.log_threshold.grad is not None and sae.log_threshold.grad.abs().sum() > 0
    assert parts["sparsity"].item() == pytest.approx((pre > 0.5).float().sum(-1).mean().item())


def test_auxk_trains_only_dead_latents():
    sae = _sae("topk", k=2)
    x = torch.randn(32, 8)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:10] = True
    assert sae.loss(x)[1]["aux"].item() == 0 and sae.loss(x, torch.zeros(32, dtype=torch.bool))[1]["aux"].item() == 0
    _, parts = sae.loss(x, dead)
    parts["aux"].backward()
    assert parts["aux"].item() > 0
    grad = sae.W_enc_v.grad.abs().sum(0)  # [d_sae]: the encoder parameter TopK trains (W_enc is derived from it)
    assert grad[:10].sum() > 0 and grad[10:].sum() == 0


def test_ghost_grads_reach_dead_latents():
    sae = _sae("standard")
    x = torch.randn(32, 8)
    _, parts = sae.loss(x)
    dead = torch.zeros(32, dtype=torch.bool)
    assert ghost_grads_loss(sae, x, parts["x_hat"], parts["pre"], dead).item() == 0
    dead[5] = True
    ghost_grads_loss(sae, x, parts["x_hat"], parts["pre"], dead).backward()
    grad = sae.W_enc.grad.abs().sum(0)
    assert grad[5] > 0 and grad[torch.arange(32) != 5].sum() == 0


@pytest.mark.parametrize("arch", ["standard", "topk"])
def test_resampling_points_dead_latents_at_badly_reconstructed_inputs(arch):
    sae = _sae(arch, k=4)
    opt = torch.optim.Adam(sae.parameters())
    x = torch.randn(64, 8)
    sae.loss(x)[0].backward()
    opt.step()
    dead = torch.zeros(32, dtype=torch.bool)
    dead[[3, 7]] = True
    before = sae.W_dec.detach().clone()
    live_encoder = sae.W_enc[:, ~dead].norm(dim=0).mean()
    assert resample_dead_latents(sae, opt, dead, x, torch.Generator().manual_seed(0), encoder_scale=0.2) == 2
    assert torch.allclose(sae.W_dec[~dead], before[~dead])  # live latents untouched
    assert torch.allclose(sae.W_dec[dead].norm(dim=-1), torch.ones(2))
    cos = torch.nn.functional.normalize(x - sae.b_dec, dim=-1) @ sae.W_dec[dead].T  # [64, 2]
    assert torch.allclose(cos.max(0).values, torch.ones(2))  # each is one of the inputs
    # the encoder the forward pass uses, on the scale of the live latents' (not of a parametrisation's)
    torch.testing.assert_close(sae.W_enc[:, dead].norm(dim=0), 0.2 * live_encoder.expand(2))
    assert (sae.b_enc[dead] == 0).all()
    decoder_param = sae.W_dec_v if arch == "topk" else sae.W_dec  # the parameter Adam updates
    state = opt.state[decoder_param]["exp_avg"]
    assert (state[dead] == 0).all() and (state[~dead] != 0).any()


def test_every_architectures_w_dec_is_the_decoder_its_forward_pass_uses():
    for arch in sorted(ARCHITECTURES):
        sae = _sae(arch, k=4).eval()
        x = torch.randn(16, 8) * 3
        x_hat, z = sae(x)
        torch.testing.assert_close(x_hat, z @ sae.W_dec + sae.b_dec, msg=arch)
        # one latent alone reconstructs b_dec plus its value times its W_dec row
        one = torch.zeros(1, 32)
        one[0, 5] = 2.0
        torch.testing.assert_close(sae.decode(one)[0], sae.b_dec + 2.0 * sae.W_dec[5], msg=arch)


def test_trainer_counts_latents_that_never_fire_as_dead():
    sae = _sae("standard", d_sae=16)
    with torch.no_grad():
        sae.b_enc[:4] = -100.0  # these can never fire
    source = InMemoryActivations(torch.randn(1000, 8), batch_size=50)
    trainer = Trainer(sae, source, TrainConfig(steps=30, dead_after=20, lr=1e-4))
    trainer.run(progress=False)
    dead = trainer.dead()
    assert dead[:4].all() and trainer.history[-1]["dead"] >= 4 / 16


@pytest.mark.parametrize("remedy", ["none", "ghost_grads"])
def test_the_trainer_trains_inside_a_lessons_no_grad(remedy):
    """Lessons turn gradients off (torch.set_grad_enabled(False)); an SAE or transcoder trained on first use there
    (lesson 08 on another model than the course's) must still learn, and exactly as it would outside."""
    data = torch.randn(1000, 8)

    def trained(grad: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        trainer = Trainer(_sae("standard"), InMemoryActivations(data, 50, seed=1), TrainConfig(steps=20, remedy=remedy))
        with torch.set_grad_enabled(grad):
            trainer.run(progress=False)
        return trainer.sae.state_dict()

    outside, inside = trained(True), trained(False)
    for name, value in outside.items():
        assert torch.equal(value, inside[name]), name
    torch.manual_seed(0)
    assert not torch.equal(_sae("standard").W_enc, inside["W_enc"])  # and it did train


def test_unknown_remedy_is_an_error():
    with pytest.raises(ValueError, match="remedy"):
        Trainer(_sae("standard"), lambda: torch.randn(4, 8), TrainConfig(remedy="prayer"))


# ---------------------------------------------------------------- checkpoints
def test_a_resumed_run_ends_with_the_same_weights(tmp_path):
    data = torch.randn(5000, 8)
    cfg = TrainConfig(steps=60, lr=1e-3, remedy="resample", resample_every=20, dead_after=5, resample_inputs=256)

    def fresh():
        return Trainer(_sae("topk", k=3), InMemoryActivations(data, 64, seed=3), cfg)

    straight = fresh()
    straight.run(progress=False)
    first = fresh()
    first.cfg = TrainConfig(**{**cfg.__dict__, "steps": 30})
    first.run(progress=False)
    first.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = Trainer.resume(tmp_path / "ckpt.pt", InMemoryActivations(data, 64, seed=99))
    resumed.cfg.steps = 60
    resumed.run(progress=False)
    for name, value in straight.sae.state_dict().items():
        assert torch.equal(value, resumed.sae.state_dict()[name]), name
    assert straight.history[-1] == resumed.history[-1]


def test_a_source_without_state_cannot_checkpoint(tmp_path):
    trainer = Trainer(_sae("standard"), lambda: torch.randn(4, 8), TrainConfig(steps=1))
    with pytest.raises(ValueError, match="cannot save its position"):
        trainer.save_checkpoint(tmp_path / "x.pt")


# ---------------------------------------------------------------- files
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_files_round_trip_in_the_sae_lens_layout(arch, tmp_path):
    import json

    from safetensors.torch import load_file

    sae = _sae(arch, k=4, metadata={"model_name": "course", "hook_name": "blocks.2.hook_resid_post"})
    if arch == "batchtopk":
        sae.train()
        sae.encode(torch.randn(64, 8))  # give it a threshold
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    sae.eval()
    path = save_sae(sae, tmp_path / arch)
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["architecture"] == {"standard": "standard", "april": "standard", "topk": "topk",
                                   "batchtopk": "jumprelu", "jumprelu": "jumprelu"}[arch]
    assert cfg["metadata"] == {"model_name": "course", "hook_name": "blocks.2.hook_resid_post"}
    assert cfg["d_in"] == 8 and cfg["d_sae"] == 32 and cfg["apply_b_dec_to_input"] == (arch != "april")
    tensors = load_file(str(path / "sae_weights.safetensors"))
    assert tensors["W_enc"].shape == (8, 32) and tensors["W_dec"].shape == (32, 8)
    assert ("threshold" in tensors) == (arch in ("batchtopk", "jumprelu"))
    loaded = load_sae(path)
    x = torch.randn(16, 8)
    assert torch.allclose(loaded(x)[0], sae(x)[0], atol=1e-6)


def test_a_file_without_mechlib_settings_loads_as_sae_lens_would(tmp_path):
    import json

    sae = _sae("jumprelu", threshold_init=0.3)
    path = save_sae(sae, tmp_path / "s")
    cfg = json.loads((path / "cfg.json").read_text())
    del cfg["mechlib"]
    (path / "cfg.json").write_text(json.dumps(cfg))
    loaded = load_sae(path)
    assert isinstance(loaded, JumpReLUSAE) and torch.allclose(loaded.threshold, torch.full((32,), 0.3))


def _break(path, what):
    import json

    from safetensors.torch import load_file, save_file

    cfg = json.loads((path / "cfg.json").read_text())
    tensors = load_file(str(path / "sae_weights.safetensors"))
    if what == "missing key":
        del tensors["b_dec"]
    elif what == "shape":
        tensors["W_enc"] = tensors["W_enc"][:, :10].contiguous()
    elif what == "architecture":
        cfg["architecture"] = "gated"
        del cfg["mechlib"]
    elif what == "no weights":
        (path / "sae_weights.safetensors").unlink()
        return
    save_file(tensors, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("what, message", [("missing key", "lacks 'b_dec'"), ("shape", "W_enc has shape"),
                                           ("architecture", "'gated' is not one mechlib implements"),
                                           ("no weights", "has no sae_weights.safetensors")])
def test_damaged_files_are_refused_with_a_reason(tmp_path, what, message):
    path = save_sae(_sae("standard"), tmp_path / "s")
    _break(path, what)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_sae(path)


def test_an_sae_for_another_hook_is_refused(tmp_path, course_tl):
    path = save_sae(_sae("standard", d_in=8, metadata={"hook_name": "blocks.2.hook_resid_post"}), tmp_path / "s")
    with pytest.raises(ValueError, match="d_in=8 but 'blocks.2.hook_resid_post' of this model has width 128"):
        load_sae(path, course_tl)
    with pytest.raises(ValueError, match="not a hook of this model"):
        load_sae(path, course_tl, hook_name="blocks.2.hook_resid_pots")


def test_folding_the_input_scale_keeps_the_sae_exact():
    for arch in sorted(ARCHITECTURES):
        sae = _sae(arch, k=4).eval()
        with torch.no_grad():
            sae.b_dec.normal_()
        x = torch.randn(16, 8) * 7
        scaled_out = sae(x * 0.25)[0] / 0.25
        sae.fold_input_scale(0.25)
        assert torch.allclose(sae(x)[0], scaled_out, atol=1e-4), arch


# ---------------------------------------------------------------- activation store
HOOK = "blocks.2.hook_resid_post"


def test_store_serves_shuffled_non_bos_activations(course_tl):
    tokens = next(corpus_token_batches(course_tl, 32))
    store = ActivationStore(course_tl, HOOK, batch_size=64, buffer_size=512, seed=1)
    acts = store.activations(tokens)  # [n, d_in]
    _, cache = course_tl.run_with_cache(tokens, names_filter=HOOK)
    bos = course_tl.tokenizer.bos_token_id
    assert torch.allclose(acts, cache[HOOK][tokens != bos], atol=1e-5)
    assert len(acts) == int((tokens != bos).sum()) < tokens.numel()
    batch = store.next_batch()
    assert batch.shape == (64, 128) and store.d_in == 128
    assert len(store.buffer) <= 512


def test_store_normalises_to_norm_sqrt_d_in(course_tl):
    store = ActivationStore(course_tl, HOOK, batch_size=256, buffer_size=2048, normalize=True)
    norms = torch.cat([store.next_batch() for _ in range(8)]).norm(dim=-1)
    assert abs(norms.mean().item() / 128**0.5 - 1) < 0.1 and store.scale != 1.0


def test_store_reads_nnsight_modules_like_transformer_lens_hooks(course_tl, course_nnsight):
    tl = ActivationStore(course_tl, HOOK, batch_size=64, buffer_size=512)
    nn = ActivationStore(course_nnsight, "transformer.h.2", batch_size=64, buffer_size=512)
    tokens = torch.tensor([[0] + list(range(5, 40))])
    assert torch.allclose(tl.activations(tokens), nn.activations(tokens), atol=1e-4)


def test_store_errors_say_what_to_do(course_tl):
    with pytest.raises(ValueError, match="not a hook of this model.*hook_resid_post"):
        ActivationStore(course_tl, "blocks.2.resid_post")
    with pytest.raises(ValueError, match="at least twice batch_size"):
        ActivationStore(course_tl, HOOK, batch_size=4096, buffer_size=4096)


def test_pretokenized_rows_are_the_live_stream_through_and_past_the_cache(course_tl, tmp_path, monkeypatch):
    from mechlib.sae.tokens import pretokenized

    monkeypatch.setenv("MECHLIB_CACHE", str(tmp_path))
    rows = pretokenized(course_tl, 2000, batch_size=7, seed=4, progress=False)  # 16 rows of 128: 2 batches, then live
    live = corpus_token_batches(course_tl, 7, seed=4)
    assert len(rows.rows) == 16
    assert all(torch.equal(next(rows), next(live)) for _ in range(6))
    (cache,) = (tmp_path / "tokens").glob("*.safetensors")
    made = cache.stat().st_mtime_ns
    again = pretokenized(course_tl, 1000, batch_size=7, seed=4, progress=False)  # fewer: served from the cache
    assert cache.stat().st_mtime_ns == made and len(again.rows) == 16
    longer = pretokenized(course_tl, 4000, batch_size=5, seed=4, progress=False)  # more: the cache is extended
    live = corpus_token_batches(course_tl, 5, seed=4)
    assert len(longer.rows) == 32 and all(torch.equal(next(longer), next(live)) for _ in range(9))


def test_a_cache_made_by_another_stream_is_rebuilt_not_served(course_tl, tmp_path, monkeypatch):
    from mechlib.sae.tokens import pretokenized

    monkeypatch.setenv("MECHLIB_CACHE", str(tmp_path))
    pretokenized(course_tl, 1000, seed=1, progress=False)
    (seed1,) = (tmp_path / "tokens").glob("*.safetensors")
    seed2 = seed1.with_name(seed1.name.replace("seed1", "seed2"))
    seed2.write_bytes(seed1.read_bytes())  # as if the corpus had changed since the cache was made
    rows = pretokenized(course_tl, 1000, batch_size=4, seed=2, progress=False)
    assert torch.equal(next(rows), next(corpus_token_batches(course_tl, 4, seed=2)))
    seed2.write_bytes(b"not a safetensors file")  # an interrupted or damaged cache
    rows = pretokenized(course_tl, 1000, batch_size=4, seed=2, progress=False)
    assert torch.equal(next(rows), next(corpus_token_batches(course_tl, 4, seed=2)))


@pytest.mark.parametrize("n_tokens", [None, 3000], ids=["live", "pretokenized"])
def test_training_from_the_store_resumes_exactly(course_tl, tmp_path, monkeypatch, n_tokens):
    monkeypatch.setenv("MECHLIB_CACHE", str(tmp_path))

    def store():  # pretokenized: the cache runs out during the first half, the rest is live
        return ActivationStore(course_tl, HOOK, batch_size=128, buffer_size=1024, seed=5, n_tokens=n_tokens)

    cfg = TrainConfig(steps=24, lr=1e-3)
    straight = Trainer(_sae("topk", d_in=128, d_sae=256, k=8), store(), cfg)
    straight.run(progress=False)
    first = Trainer(_sae("topk", d_in=128, d_sae=256, k=8), store(), TrainConfig(steps=12, lr=1e-3))
    first.run(progress=False)
    first.save_checkpoint(tmp_path / "c.pt")
    resumed = Trainer.resume(tmp_path / "c.pt", store())
    resumed.cfg.steps = 24
    resumed.run(progress=False)
    assert all(torch.equal(v, resumed.sae.state_dict()[k]) for k, v in straight.sae.state_dict().items())


# ---------------------------------------------------------------- metrics
def test_a_perfect_sae_recovers_everything_and_a_zero_sae_nothing(course_tl):
    from mechlib.sae.metrics import evaluate_sae

    perfect = _sae("standard", d_in=128, d_sae=256)
    with torch.no_grad():  # relu(x) - relu(-x) = x
        eye = torch.eye(128)
        perfect.W_enc.copy_(torch.cat([eye, -eye], 1))
        perfect.W_dec.copy_(torch.cat([eye, -eye], 0))
    tokens = next(corpus_token_batches(course_tl, 4, seed=1))
    m = evaluate_sae(perfect, course_tl, HOOK, tokens)
    assert m["FVU"] < 1e-6 and abs(m["CE loss recovered"] - 1) < 1e-4 and m["KL"] < 1e-5
    assert m["CE zero-ablated"] > m["CE clean"] + 1
    zero = _sae("standard", d_in=128, d_sae=256)
    with torch.no_grad():
        zero.b_enc.fill_(-1e4)  # never fires: reconstructs every input as b_dec = 0
    m = evaluate_sae(zero, course_tl, HOOK, tokens)
    assert abs(m["CE loss recovered"]) < 1e-4 and m["dead"] == 1.0 and m["L0"] == 0


def test_an_sae_that_outputs_the_mean_recovers_nothing_against_mean_ablation(course_tl):
    from mechlib.sae.metrics import evaluate_sae, mean_activation

    tokens = next(corpus_token_batches(course_tl, 4, seed=1))
    perfect = _sae("standard", d_in=128, d_sae=256)
    with torch.no_grad():
        eye = torch.eye(128)
        perfect.W_enc.copy_(torch.cat([eye, -eye], 1))
        perfect.W_dec.copy_(torch.cat([eye, -eye], 0))
    m = evaluate_sae(perfect, course_tl, HOOK, tokens)
    assert abs(m["CE increase"]) < 1e-4 and abs(m["CE recovered vs mean"] - 1) < 1e-4
    assert m["CE mean-ablated"] > m["CE clean"] + 0.1
    mean = _sae("standard", d_in=128, d_sae=256)
    with torch.no_grad():
        mean.b_enc.fill_(-1e4)  # never fires: reconstructs every input as b_dec, here the mean activation
        mean.b_dec.copy_(mean_activation(course_tl, HOOK, tokens))
    m = evaluate_sae(mean, course_tl, HOOK, tokens)
    assert abs(m["CE recovered vs mean"]) < 1e-4 and abs(m["CE increase"] - (m["CE mean-ablated"] - m["CE clean"])) < 1e-4
    assert m["CE loss recovered"] > 0  # against zeros, the mean itself "recovers" something


def test_several_saes_are_measured_as_each_alone(course_tl):
    from mechlib.sae.metrics import evaluate_sae, evaluate_saes

    saes = {"topk": _sae("topk", d_in=128, d_sae=256, k=8), "standard": _sae("standard", d_in=128, d_sae=256)}
    tokens = next(corpus_token_batches(course_tl, 4, seed=2))
    together = evaluate_saes(saes, course_tl, HOOK, tokens)
    for name, sae in saes.items():
        alone = evaluate_sae(sae, course_tl, HOOK, tokens)
        assert together[name].keys() == alone.keys()
        for key, value in alone.items():
            assert torch.allclose(torch.as_tensor(together[name][key]), torch.as_tensor(value)), (name, key)


def test_metrics_are_the_same_measured_a_few_rows_at_a_time(course_tl, monkeypatch):
    """GPT-2's vocabulary makes a batch's logits gigabytes: evaluate_saes runs rows in chunks, with the same result."""
    from mechlib.sae import metrics

    saes = {"topk": _sae("topk", d_in=128, d_sae=256, k=8), "standard": _sae("standard", d_in=128, d_sae=256)}
    tokens = next(corpus_token_batches(course_tl, 6, seed=3))  # [6, 128]
    whole = metrics.evaluate_saes(saes, course_tl, HOOK, tokens)
    monkeypatch.setattr(metrics, "LOGITS_PER_CHUNK", 2 * 128 * course_tl.cfg.d_vocab)  # two rows at a time
    chunked = metrics.evaluate_saes(saes, course_tl, HOOK, tokens)
    for name in saes:
        for key, value in whole[name].items():
            assert torch.allclose(torch.as_tensor(chunked[name][key]), torch.as_tensor(value), rtol=1e-5), (name, key)
    # counted chunk by chunk (keeping GPT-2-wide latents would take gigabytes), they are the whole batch's figures
    from mechlib.sae.base import fvu, l0

    x = metrics.real_activations(course_tl, HOOK, tokens)  # [n, d_in]
    for name, sae in saes.items():
        x_hat, z = sae.eval()(x)
        assert abs(chunked[name]["FVU"] - float(fvu(x, x_hat))) < 1e-5 and abs(chunked[name]["L0"] - float(l0(z))) < 1e-4
        assert torch.allclose(chunked[name]["density"], (z > 0).float().mean(0).cpu())


# ---------------------------------------------------------------- toy data with known features
@pytest.mark.slow
def test_topk_at_the_true_k_recovers_known_features():
    """512 features in 256 dimensions, about 5 active per sample: a TopK SAE with k = 5 finds them
    (mean max cosine similarity >= 0.95), far beyond its random start."""
    from mechlib.sae.toy_data import recover_known_features

    r = recover_known_features("topk", steps=500, progress=False)
    assert r["MMCS before"] < 0.4 and r["MMCS"] >= 0.95 and r["L0"] <= 5


def test_toy_data_has_the_promised_sparsity():
    from mechlib.sae.toy_data import SparseFeatureData

    data = SparseFeatureData(n_features=512, d=256, active=5, batch_size=4096, seed=1)
    coefficients, x = data.sample()
    assert x.shape == (4096, 256) and torch.allclose(x, coefficients @ data.features)
    assert abs((coefficients > 0).sum(-1).float().mean().item() - 5) < 0.2
    assert torch.allclose(data.features.norm(dim=-1), torch.ones(512))


# ---------------------------------------------------------------- the instructor command
@pytest.mark.slow
def test_instructor_command_trains_saves_and_evaluates(tmp_path, capsys):
    from mechlib.sae.__main__ import main

    out = tmp_path / "sae"
    assert main(["train", "--hook", HOOK, "--architecture", "jumprelu", "--threshold-init", "0.5", "--steps", "3",
                 "--batch-size", "256", "--expansion", "2", "--dead-after", "2", "--normalize", "--out", str(out)]) == 0
    sae = load_sae(out)
    assert sae.cfg.threshold_init == 0.5 and sae.cfg.metadata["hook_name"] == HOOK
    assert main(["evaluate", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("CE loss recovered") == 2 and "sae " in printed


def test_toy_command_prints_the_recovery_score(capsys):
    from mechlib.sae.__main__ import main

    assert main(["toy", "--steps", "5"]) == 0
    assert "mean max cosine similarity" in capsys.readouterr().out


def test_gradient_clipping_caps_the_update_gradient():
    g = torch.Generator().manual_seed(0)
    data = InMemoryActivations(torch.randn(512, 8, generator=g) * 10, batch_size=64)

    def grad_norm(clip):
        trainer = Trainer(_sae("topk", k=4), data, TrainConfig(steps=1, clip_grad_norm=clip))
        trainer.step()
        return torch.cat([p.grad.flatten() for p in trainer.sae.parameters() if p.grad is not None]).norm().item()

    assert grad_norm(None) > 1.0 and grad_norm(0.5) <= 0.5 + 1e-5


def test_sae_for_another_model_is_trained_once_then_loaded_and_never_mixed_up(course_tl, tmp_path, monkeypatch):
    import shutil

    from mechlib.sae import for_model

    monkeypatch.setenv("MECHLIB_CACHE", str(tmp_path))
    monkeypatch.setitem(for_model.RECIPE, "steps", 3)
    monkeypatch.setitem(for_model.RECIPE, "batch_size", 512)
    hook = "blocks.1.hook_resid_post"
    sae = for_model.sae_for(course_tl, "my-model", hook, progress=False)
    path = for_model.sae_path("my-model", hook)
    assert path.is_relative_to(tmp_path) and (path / "cfg.json").exists()
    assert sae.cfg.metadata["model_name"] == "my-model" and sae.cfg.d_in == course_tl.cfg.d_model
    again = for_model.sae_for(course_tl, "my-model", hook, progress=False)  # loaded, not retrained
    torch.testing.assert_close(again.W_dec, sae.W_dec)
    assert again.cfg.metadata["training_tokens"] == 3 * 512  # recorded, as lesson 03's table label reads it
    shutil.copytree(path, for_model.sae_path("other-model", hook))
    with pytest.raises(ValueError, match="trained for 'my-model'"):
        for_model.sae_for(course_tl, "other-model", hook)


def test_sae_for_the_course_model_is_the_shipped_file(course_tl):
    from mechlib.sae.for_model import SHIPPED, sae_for, sae_path

    assert sae_path("course", "blocks.2.hook_resid_post") == SHIPPED / "L2-topk-8x"
    sae = sae_for(course_tl, "course", "blocks.2.hook_resid_post")
    assert sae.cfg.architecture == "topk" and sae.cfg.metadata["hook_name"] == "blocks.2.hook_resid_post"


def test_ce_rows_measures_losses_on_the_first_rows_and_reconstruction_on_all(course_tl):
    from mechlib.sae.for_model import sae_for
    from mechlib.sae.metrics import evaluate_saes

    sae = sae_for(course_tl, "course", HOOK)
    tokens = next(corpus_token_batches(course_tl, 6, seed=2))
    full = evaluate_saes({"s": sae}, course_tl, HOOK, tokens)["s"]
    part = evaluate_saes({"s": sae}, course_tl, HOOK, tokens, ce_rows=2)["s"]
    head = evaluate_saes({"s": sae}, course_tl, HOOK, tokens[:2])["s"]
    for k in ("FVU", "dead"):  # every row
        assert part[k] == pytest.approx(full[k], abs=1e-6) and part[k] != pytest.approx(head[k], abs=1e-6)
    for k in ("CE clean", "CE with SAE", "KL"):  # the first two rows
        assert part[k] == pytest.approx(head[k], abs=1e-5) and part[k] != pytest.approx(full[k], abs=1e-5)


def test_files_in_16_bits_load_as_float32_and_keep_the_sae(tmp_path):
    import json

    sae = _sae("topk", k=4, metadata={"model_name": "course", "hook_name": HOOK}).eval()
    path = save_sae(sae, tmp_path / "half", dtype=torch.float16)
    assert json.loads((path / "cfg.json").read_text())["dtype"] == "float16"
    loaded = load_sae(path)
    assert loaded.W_dec.dtype == torch.float32
    x = torch.randn(64, 8)
    assert fvu(sae(x)[0], loaded(x)[0]) < 1e-5  # half precision changes the reconstruction negligibly


def test_tuning_moves_the_sparsity_coefficient_to_the_target_l0():
    from mechlib.sae import compare

    g = torch.Generator().manual_seed(0)
    directions = torch.randn(64, 16, generator=g)
    codes = torch.rand(40 * compare.BATCH, 64, generator=g) * (torch.rand(40 * compare.BATCH, 64, generator=g) < 0.1)
    acts = codes @ directions  # [n, 16]: sparse combinations of 64 directions
    runs = compare.tune("standard", 3e-3, acts[:-4096], acts[-4096:], {}, start=0.01)
    first, last = runs[0][1], runs[-1][1]
    assert abs(last["L0"] - compare.TARGET_L0) < abs(first["L0"] - compare.TARGET_L0)
    assert compare.matched(last) or len(runs) == 6
    assert last["coefficient"] > first["coefficient"]  # the first run was too dense: more L1


@pytest.mark.parametrize("model_name", ["course", "course-bpe"])
def test_every_shipped_sae_reconstructs_held_out_prompts_about_as_well_as_trained_ones(model_name, request):
    """Fact and IOI sentences in phrasings, frames and names no training document has, against the same kind of
    sentences in trained phrasings (the same positions: short prompts are harder than the training stream for both)."""
    from mechlib.sae.for_model import SHIPPED_FOR
    from mechlib.sae.metrics import fvu_by_text, prompt_tokens

    model = request.getfixturevalue("course_tl" if model_name == "course" else "course_bpe_tl")
    dirs = [p.parent for p in SHIPPED_FOR[model_name].rglob("cfg.json")
            if model_name == "course-bpe" or "course-bpe" not in p.parts]
    assert len(dirs) >= 9
    by_hook: dict[str, dict] = {}
    for d in dirs:
        sae = load_sae(d, model)
        by_hook.setdefault(sae.cfg.metadata["hook_name"], {})[str(d)] = sae
    texts = {"trained": prompt_tokens(model, held_out=False), "held out": prompt_tokens(model)}
    for hook, saes in by_hook.items():
        for name, f in fvu_by_text(saes, model, hook, texts).items():
            assert f["held out"] < 1.25 * f["trained"], (name, f)


# ---------------------------------------------------------------- transcoders
def _transcoder_data(n: int = 8192, seed: int = 3):
    """Inputs [n, 24] and targets [n, 8] written by the same 24 sparse features through different directions:
    what a transcoder must find (input directions to read each feature, output directions to write it)."""
    g = torch.Generator().manual_seed(seed)
    reads = torch.nn.functional.normalize(torch.randn(24, 24, generator=g), dim=-1)  # [feature, d_in]
    writes = torch.nn.functional.normalize(torch.randn(24, 8, generator=g), dim=-1)  # [feature, d_out]
    c = torch.rand(n, 24, generator=g) * (torch.rand(n, 24, generator=g) < 0.06)  # [n, feature]
    return c @ reads, c @ writes, writes


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_a_transcoder_learns_to_write_another_space_with_the_one_trainer(arch):
    x, y, writes = _transcoder_data()
    tc = make_sae(SAEConfig(d_in=24, d_sae=32, d_out=8, architecture=arch, k=4, l1_coefficient=0.02))
    assert tc.transcoder and tc.W_enc.shape == (24, 32) and tc.W_dec.shape == (32, 8) and tc.b_dec.shape == (8,)
    before = fvu(y, tc(x)[0]).item()
    history = train_sae(tc, InMemoryActivations(x, 256, targets=y), steps=1500, lr=3e-3, progress=False)
    tc.eval()
    x_hat, z = tc(x)
    assert x_hat.shape == y.shape and history[-1]["FVU"] < 0.05 and fvu(y, x_hat).item() < 0.05 < before
    directions = torch.nn.functional.normalize(tc.W_dec.detach(), dim=-1)  # [d_sae, d_out]
    assert (writes @ directions.T).max(1).values.median() > 0.85  # its latents write the features' directions
    # the input is not centred by the output's bias: shifting b_dec moves the output, not the latents
    with torch.no_grad():
        tc.b_dec += 1.0
    assert torch.equal(tc.encode(x), z)


@pytest.mark.parametrize("skip", [False, True])
def test_a_transcoder_file_round_trips(tmp_path, skip):
    x, _, _ = _transcoder_data(64)
    tc = make_sae(SAEConfig(d_in=24, d_sae=32, d_out=8, architecture="topk", k=4, skip=skip, seed=5))
    if skip:
        with torch.no_grad():
            tc.W_skip.normal_()
    back = load_sae(save_sae(tc, tmp_path / "tc"))
    assert back.transcoder and back.W_dec.shape == (32, 8) and (back.W_skip is not None) == skip
    assert torch.allclose(back(x)[0], tc(x)[0], atol=1e-5)


@pytest.mark.slow
def test_a_skip_connection_fits_what_a_few_latents_cannot():
    """Target = a dense linear map of the input + sparse features written elsewhere: a TopK transcoder with 4 active
    latents can only approximate the dense part; with a skip connection the fit is several times better."""
    x, y_sparse, writes = _transcoder_data()
    linear = torch.randn(8, 24, generator=torch.Generator().manual_seed(9)) / 24 ** 0.5  # [d_out, d_in]
    y = y_sparse + x @ linear.T
    fits = {}
    for skip in (False, True):
        tc = make_sae(SAEConfig(d_in=24, d_sae=32, d_out=8, architecture="topk", k=4, skip=skip))
        train_sae(tc, InMemoryActivations(x, 256, targets=y), steps=1500, lr=3e-3, progress=False)
        fits[skip] = fvu(y, tc.eval()(x)[0]).item()
    assert fits[True] < 0.01 and fits[True] < fits[False] / 3, fits
    with pytest.raises(ValueError, match="skip connection maps a transcoder"):
        make_sae(SAEConfig(d_in=24, d_sae=32, skip=True))


def test_transcoder_mistakes_are_explained():
    x, y, _ = _transcoder_data(64)
    tc = make_sae(SAEConfig(d_in=24, d_sae=32, d_out=8, architecture="topk", k=4))
    with pytest.raises(ValueError, match="target has width 24, this module writes 8"):
        tc.loss(x)  # no target: an SAE's loss
    with pytest.raises(ValueError, match="give a transcoder SAEConfig\\(d_out"):
        _sae("topk", d_in=24).loss(x, target=y)
    with pytest.raises(ValueError, match="resampling.*transcoder"):
        Trainer(tc, InMemoryActivations(x, 16, targets=y), TrainConfig(remedy="resample"))
    with pytest.raises(ValueError, match="one target row per input"):
        InMemoryActivations(x, 16, targets=y[:10])
    with pytest.raises(ValueError, match="fold_input_scale is for SAEs"):
        tc.fold_input_scale(2.0)


def test_store_serves_a_transcoders_input_and_target_rows_together(course_tl):
    """MLP input and output at the same positions: each served pair is one position's, both scaled alike."""
    import itertools

    tokens = corpus_token_batches(course_tl, batch_size=4, n_ctx=64)
    fixed = next(tokens)  # [4, 64]
    store = ActivationStore(course_tl, "blocks.1.mlp.hook_in", batch_size=64, buffer_size=128,
                            tokens=itertools.repeat(fixed), target="blocks.1.hook_mlp_out", normalize=True)
    _, cache = course_tl.run_with_cache(fixed)
    keep = fixed != course_tl.tokenizer.bos_token_id
    rows = torch.cat([cache["blocks.1.mlp.hook_in"][keep], cache["blocks.1.hook_mlp_out"][keep]], -1)  # [n, 256]
    x, y = store.next_batch()
    assert x.shape == (64, 128) and y.shape == (64, 128) and store.d_in == 128
    served = torch.cat([x, y], -1) / store.scale  # [64, 256]
    assert torch.allclose((served[:, None] - rows[None]).abs().amax(-1).min(1).values, torch.zeros(64), atol=1e-4)
    assert abs(x.norm(dim=-1).mean().item() - 128 ** 0.5) < 0.2 * 128 ** 0.5  # normalised by the inputs' norm
