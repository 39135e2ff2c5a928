"""Fake CUDA: run code on the CPU as if the model were on a GPU, to catch device mismatches without one.

    MECHLIB_FAKE_CUDA=1 python -m mechlib.lessons      # every lesson, its model "on cuda" (make fake-cuda)

A GPU stops a lesson with "Expected all tensors to be on the same device" wherever a tensor made on the
CPU (token ids, an index, a mask) meets one on the model's device; on a CPU-only machine the same code runs
and the bug ships. This module tags the tensors that would live on the GPU and applies CUDA's device rules
to every torch call, so CI finds those bugs with the error a Colab GPU would give:

- `.to("cuda")`, `.cuda()`, `device="cuda"` and `nn.Module.to("cuda")` keep the data on the CPU but tag it;
  tagged tensors report `device == cuda:0`, and whatever is computed from them is tagged too.
- An op that mixes a tagged tensor with an untagged one of one dimension or more raises CUDA's error.
  As on CUDA, 0-dimensional CPU tensors mix freely (they are scalars), a CUDA tensor may be indexed with
  CPU indices, and copies between devices (`copy_`, `x[i] = y`, `.to`) are allowed.
- `.cpu()` gives an untagged copy; `.numpy()` of a tagged tensor (and so plotting it) raises, as on CUDA.

It is a `TorchFunctionMode`, so it sees every torch call made from Python (not what C++ does inside one call,
which stays on one device); backward runs with it on, so hooks see their gradients on the GPU. torch.cuda
reports one device, so libraries place models as they would on a GPU; anything else that needs the CUDA
runtime (a CUDA random generator, streams) fails as on a machine without one. It is a check, not a
simulation of speed: the lessons run about as fast as on the CPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

ENV = "MECHLIB_FAKE_CUDA"
CUDA = torch.device("cuda", 0)
_TAG = "_mechlib_fake_cuda"
_mode: "FakeCudaMode | None" = None


def enabled() -> bool:
    """Is fake CUDA on in this process (enable() called, or MECHLIB_FAKE_CUDA=1 when mechlib was imported)?"""
    return _mode is not None


def is_fake_cuda(t: torch.Tensor) -> bool:
    """Would this tensor live on the GPU?"""
    return getattr(t, _TAG, False)


def _tag(x: Any, on: bool = True) -> Any:
    if isinstance(x, torch.Tensor):
        setattr(x, _TAG, on)
    elif isinstance(x, (tuple, list)):
        for y in x:
            _tag(y, on)
    return x


def _tensors(x: Any, out: list) -> list:
    if isinstance(x, torch.Tensor):
        out.append(x)
    elif isinstance(x, (tuple, list)):
        for y in x:
            _tensors(y, out)
    elif isinstance(x, dict):
        for y in x.values():
            _tensors(y, out)
    return out


def _is_cuda(device: Any) -> bool:
    if isinstance(device, int):
        return True  # a bare index means a CUDA device
    return device is not None and torch.device(device).type == "cuda"


def mismatch_error(name: str) -> RuntimeError:
    return RuntimeError(
        f"Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
        f"(in {name}; fake CUDA: this would crash on a GPU. Create the tensor on the model's device, "
        f"e.g. device=model.cfg.device or .to(tokens.device).)")


# calls that may take tensors on both devices, as on CUDA
_MIXING_ALLOWED = {"copy_", "__setitem__", "_has_compatible_shallow_copy_type", "set_", "tensor", "as_tensor"}
_TO_HOST = {"numpy", "__array__"}


class FakeCudaMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("__get__", "__set__"):
            return self._attribute(func, name, args)
        if name in ("to", "cuda", "cpu", "type_as"):
            return self._move(func, name, args, kwargs)
        if func in (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad):
            return _autograd(func, args, kwargs)
        if name in ("register_hook", "register_post_accumulate_grad_hook") and is_fake_cuda(args[0]):
            return func(args[0], _tagging_hook(args[1]))  # the gradient lives where its tensor does
        tensors = _tensors(args, _tensors(kwargs, []))
        on_gpu = any(is_fake_cuda(t) for t in tensors)
        if on_gpu and torch._C._current_autograd_node() is not None:  # in backward: gradients arrive untagged
            return _tag(func(*args, **kwargs))
        if on_gpu and name in _TO_HOST:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the "
                            "tensor to host memory first. (fake CUDA: this would crash on a GPU)")
        if name == "__getitem__":  # a CUDA tensor takes CPU indices, not the other way round
            if on_gpu and not is_fake_cuda(args[0]):
                raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor "
                                   "(cpu) (fake CUDA: a CPU tensor indexed with CUDA indices would crash on a GPU)")
            on_gpu = is_fake_cuda(args[0])
        elif on_gpu and name not in _MIXING_ALLOWED and any(not is_fake_cuda(t) and t.dim() > 0 for t in tensors):
            raise mismatch_error(getattr(func, "__qualname__", name))
        if kwargs.get("device") is not None:  # a factory: torch.zeros(..., device=...)
            on_gpu = _is_cuda(kwargs["device"])
            kwargs = {**kwargs, "device": "cpu"}
        elif name in ("tensor", "as_tensor"):  # from data: keeps a tensor's device, else the CPU
            on_gpu = bool(args) and isinstance(args[0], torch.Tensor) and is_fake_cuda(args[0])
        out = func(*args, **kwargs)
        return _tag(out) if on_gpu else out  # _tag leaves numbers and strings (.item(), repr) alone

    def _attribute(self, func, name: str, args):
        owner, desc = args[0], getattr(func.__self__, "__name__", "")
        if name == "__set__":  # param.data = x (nn.Module.to): the tensor takes x's device
            out = func(*args)
            if desc == "data" and isinstance(args[1], torch.Tensor):
                _tag(owner, is_fake_cuda(args[1]))
            return out
        if is_fake_cuda(owner):
            if desc == "device":
                return CUDA
            if desc in ("is_cuda", "is_cpu"):
                return desc == "is_cuda"
        out = func(*args)
        if isinstance(out, torch.Tensor) and is_fake_cuda(owner):
            _tag(out)
        return out

    def _move(self, func, name: str, args, kwargs):
        """.to(...), .cuda(), .cpu(), .type_as(other): a move between devices makes a tagged or untagged copy."""
        x, dtype, copy = args[0], None, kwargs.get("copy", False)
        if name in ("cuda", "cpu"):
            target = name == "cuda"
        elif name == "type_as" or (len(args) > 1 and isinstance(args[1], torch.Tensor)) or "other" in kwargs:
            other = args[1] if len(args) > 1 else kwargs["other"]  # .type_as(other), .to(other)
            target, dtype = is_fake_cuda(other), other.dtype
        else:  # .to(device, dtype, non_blocking) in any of its forms
            device, dtype, _, _ = torch._C._nn._parse_to(*args[1:], **{k: v for k, v in kwargs.items() if k != "copy"})
            target = is_fake_cuda(x) if device is None else device.type == "cuda"
        out = x.to(dtype=dtype, copy=copy) if dtype is not None else (x.clone() if copy else x)
        if out is x and target != is_fake_cuda(x):
            out = x.clone()
        return _tag(out, target)


def _autograd(func, args, kwargs):
    """Run backward with fake CUDA on: a mode is off while it handles a call, and hooks run inside this one."""
    import torch.autograd as autograd

    checks = autograd.has_torch_function
    autograd.has_torch_function = lambda *a: False  # run the call itself, not this mode's handler again
    try:
        with FakeCudaMode():
            if func is torch.Tensor.backward:
                return autograd.backward(args[0], kwargs.get("gradient"), kwargs.get("retain_graph"),
                                         kwargs.get("create_graph", False), inputs=kwargs.get("inputs"))
            grads = func(*args, **kwargs)  # torch.autograd.grad: made by the engine, on its inputs' devices
            inputs = kwargs.get("inputs", args[1] if len(args) > 1 else ())
            inputs = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
            for g, x in zip(grads, inputs):
                if g is not None:
                    _tag(g, is_fake_cuda(x))
            return grads
    finally:
        autograd.has_torch_function = checks


def _tagging_hook(hook):
    def tagged(grad):
        return hook(_tag(grad))
    return tagged


_parameter_new = torch.nn.Parameter.__new__


def _new_parameter(cls, data=None, requires_grad=True):
    p = _parameter_new(cls, data, requires_grad)
    if data is not None and is_fake_cuda(data):
        _tag(p)
    return p


# torch.cuda as libraries see it: one device (transformers' pipeline, for one, puts its model on cuda:0 when
# CUDA is available). Whatever else a library asks of the CUDA runtime fails, as it would without a GPU.
_CUDA_API = {"is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
             "get_device_name": lambda device=None: "fake CUDA (mechlib.fake_cuda, on the CPU)",
             "get_device_capability": lambda device=None: (9, 0), "synchronize": lambda device=None: None,
             "empty_cache": lambda: None, "memory_allocated": lambda device=None: 0,
             "max_memory_allocated": lambda device=None: 0, "reset_peak_memory_stats": lambda device=None: None}
_cuda_api_saved: dict = {}


def enable() -> None:
    """Turn fake CUDA on for this process, from now on (mechlib calls this on import when MECHLIB_FAKE_CUDA=1)."""
    global _mode
    if _mode is None:
        torch.nn.Parameter.__new__ = _new_parameter
        for name, fake in _CUDA_API.items():
            _cuda_api_saved[name] = getattr(torch.cuda, name)
            setattr(torch.cuda, name, fake)
        _mode = FakeCudaMode()
        _mode.__enter__()


def disable() -> None:
    global _mode
    if _mode is not None:
        _mode.__exit__(None, None, None)
        torch.nn.Parameter.__new__ = _parameter_new
        for name, real in _cuda_api_saved.items():
            setattr(torch.cuda, name, real)
        _mode = None


def enable_from_environment() -> None:
    if os.environ.get(ENV) == "1":
        enable()
