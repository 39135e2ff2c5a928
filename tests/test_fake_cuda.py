"""Fake CUDA finds on a CPU the device mismatches a GPU would crash on, and lets correct code run."""

import copy

import pytest
import torch

from mechlib import fake_cuda, load_model, load_tokenizer
from mechlib.probes import probe_report
from mechlib.unlearning import redraw_rows

SAME_DEVICE = "Expected all tensors to be on the same device"


@pytest.fixture
def fake():
    fake_cuda.enable()
    yield
    fake_cuda.disable()


def test_cpu_ids_meeting_gpu_tokens_raise_cudas_error(fake):
    """Issue 14's lesson-04 crash: `ioi_clean == io_ids[:, None]`, the tokens on the GPU and the ids made on the CPU."""
    tokens = torch.tensor([[0, 5, 6, 5]]).to("cuda")  # [batch, pos]
    io_ids = torch.tensor([5])  # [batch]
    with pytest.raises(RuntimeError, match=SAME_DEVICE):
        tokens == io_ids[:, None]
    assert (tokens == io_ids[:, None].to(tokens.device)).sum().item() == 2  # the fix runs, with the right answer


def test_what_cuda_allows_and_what_it_does_not(fake):
    x = torch.arange(6.0, device="cuda").reshape(2, 3)
    assert x.device == torch.device("cuda", 0) and x.is_cuda
    assert (x * torch.tensor(2.0)).is_cuda  # a CPU scalar mixes with GPU tensors
    assert x[torch.tensor([1])].is_cuda  # a GPU tensor takes CPU indices
    x[0] = torch.ones(3)  # and CPU values, copied over
    assert x.sum().item() == 15.0
    with pytest.raises(RuntimeError, match=SAME_DEVICE):
        torch.ones(3) * torch.tensor(2.0, device="cuda")  # a GPU scalar does not mix with CPU tensors
    with pytest.raises(RuntimeError, match="indices"):
        torch.arange(3)[torch.tensor([0], device="cuda")]
    with pytest.raises(RuntimeError, match=SAME_DEVICE):
        torch.cat([x, torch.zeros(1, 3)])
    with pytest.raises(TypeError, match="numpy"):
        x.numpy()  # so matplotlib can't plot it either
    host = x.cpu()
    assert not host.is_cuda and x.is_cuda and host.numpy().shape == (2, 3)  # .cpu() copies; x stays on the GPU
    assert not x.to("cpu").is_cuda and torch.zeros(2).to(x).is_cuda and torch.zeros(2, device=x.device).is_cuda


def test_a_module_moved_to_the_gpu_trains_and_copies(fake):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2).to("cuda")
    x = torch.randn(8, 3, device="cuda")
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    before = net.weight.detach().clone()
    net(x).pow(2).sum().backward()
    opt.step()
    assert net.weight.is_cuda and net.weight.grad.is_cuda and not torch.equal(net.weight, before)
    assert copy.deepcopy(net).weight.is_cuda
    assert torch.nn.Parameter(torch.zeros(2, device="cuda")).is_cuda
    with pytest.raises(RuntimeError, match=SAME_DEVICE):
        net(torch.randn(8, 3))  # input left on the CPU


def test_hooks_in_backward_see_gpu_gradients(fake):
    x = torch.ones(3, device="cuda", requires_grad=True)
    seen = []
    y = x * 2
    y.register_hook(lambda g: seen.append((g.is_cuda, torch.zeros(3, device="cuda").is_cuda)))
    y.sum().backward()
    assert seen == [(True, True)] and x.grad.is_cuda
    (grad,) = torch.autograd.grad((x * 3).sum(), x)
    assert grad.is_cuda


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight", "transformers"])
def test_every_backend_puts_the_course_model_on_the_fake_gpu(fake, backend):
    from mechlib import best_device

    assert best_device() == "cuda"
    model = load_model("course", backend=backend)
    assert all(p.is_cuda for p in model.parameters())


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight", "transformers"])
def test_a_model_asked_for_on_the_cpu_stays_there_when_a_gpu_is_available(fake, backend):
    """nnsight wraps the model in a transformers pipeline, which moves it to cuda:0 unless told its device."""
    model = load_model("course", backend=backend, device="cpu")
    assert not any(p.is_cuda for p in model.parameters())


def test_disable_gives_torch_back():
    real = torch.cuda.is_available()
    fake_cuda.enable()
    assert torch.cuda.is_available() and fake_cuda.enabled()
    fake_cuda.disable()
    assert torch.cuda.is_available() == real and not fake_cuda.enabled()
    assert not torch.ones(2).is_cuda


# ---- bugs fake CUDA found in mechlib, which a GPU would have hit (lesson 07) ----
def test_probe_report_takes_labels_made_on_the_cpu(fake):
    torch.manual_seed(0)
    labels = torch.arange(40) % 2  # [n], on the CPU, as a lesson builds them
    x = (torch.randn(40, 4) + 3 * labels[:, None]).to("cuda")  # [n, d]: the label is decodable
    report = probe_report(x, labels, types=torch.arange(40), train=torch.arange(40) < 30, steps=50)
    assert report.accuracy == 1.0


def test_redraw_rows_on_the_gpu(fake):
    model = load_model("course", backend="transformers")
    tok = load_tokenizer("course")
    (row,) = tok(" Paris")["input_ids"]
    before = model.transformer.wte.weight[row].clone()
    redraw_rows(model, tok, [row])
    assert model.transformer.wte.weight.is_cuda and not torch.equal(model.transformer.wte.weight[row], before)
