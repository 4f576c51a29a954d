"""Quantization-aware fine-tuning whose fake-quant is lwc's int8 arithmetic.

lwc's int8 path (:mod:`lwc.quantize`) quantizes the **input** and the **weight** of every
Conv / Gemm / MatMul:

* activations per tensor, asymmetric uint8 (:func:`lwc.quantize.rewrite.activation_qparams`):
  range ``[lo, hi]`` widened to hold 0, ``scale = (hi - lo) / 255``,
  ``zp = clip(round(-lo / scale), 0, 255)``;
* weights per output channel, symmetric int8, narrow range
  (:func:`lwc.quantize.rewrite.weight_qparams`): ``scale_c = max|w_c| / 127``, ``zp = 0``,
  ``q = clip(round(w / scale_c), -127, 127)``.

Quantize / dequantize are the ONNX QuantizeLinear / DequantizeLinear operators
(onnx.ai operator spec: ``y = saturate(round(x / scale) + zp)``, round half to even;
``x' = (y - zp) * scale``), the affine scheme of Jacob et al. 2018 ("Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR,
eq. 1: ``r = S (q - Z)``). ``torch.round`` rounds half to even as well, so
:func:`fake_quant_activation` / :func:`fake_quant_weight` give the values onnxruntime's
QDQ gives for the same scale and zero point (tests/test_compress.py checks it).

Training uses the straight-through estimator (Bengio et al. 2013; Jacob et al. 2018
section 3): the forward pass sees the fake-quantized value, the backward pass the identity.
Activation ranges are the min / max over the calibration batch, then an exponential moving
average (momentum 0.01) of batch min / max during training (Jacob et al. section 3).

After :func:`qat_finetune`, :func:`strip_qat` gives back a plain float model; compile it
with ``--quantize int8`` (calibration ``minmax`` matches the ranges trained here best).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
from lwc.compress._torch import torch as _torch
from lwc.compress.training import _train, as_dataset, teacher_logits
from lwc.errors import LwcError


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """lwc's uint8 scale and zero point for the range ``[lo, hi]`` (float32 scale, int zp).

    The same numbers as :func:`lwc.quantize.rewrite.activation_qparams` (it is called).
    """
    from lwc.quantize.rewrite import activation_qparams as qparams

    scale, zp = qparams(float(lo), float(hi))
    return float(scale), int(zp)


def fake_quant_activation(x, scale: float, zero_point: int):
    """uint8 QuantizeLinear -> DequantizeLinear of ``x`` (float tensor, any shape).

    ``q = clamp(round(x / scale) + zp, 0, 255)``, ``x' = (q - zp) * scale``, round half to even;
    gradient: straight through (identity).
    """
    torch = _torch()
    scale_t = torch.tensor(scale, dtype=torch.float32)
    q = torch.clamp(torch.round(x / scale_t) + zero_point, 0, 255)
    return x + ((q - zero_point) * scale_t - x).detach()


def weight_scales(w) -> object:
    """Per-output-channel (axis 0) symmetric int8 scales ``max|w_c| / 127`` (1 where all zero)."""
    torch = _torch()
    amax = w.detach().reshape(w.shape[0], -1).abs().amax(dim=1)
    return torch.where(amax > 0, amax / 127.0, torch.ones_like(amax)).to(torch.float32)


def fake_quant_weight(w):
    """int8 per-channel (axis 0) symmetric narrow-range QDQ of a Conv / Linear weight.

    ``q = clamp(round(w / s_c), -127, 127)``, ``w' = q * s_c``; straight-through gradient.
    """
    torch = _torch()
    s = weight_scales(w).reshape((-1,) + (1,) * (w.ndim - 1))
    q = torch.clamp(torch.round(w / s), -127, 127)
    return w + (q * s - w).detach()


def _qat_module_class():
    torch = _torch()
    nn, f = torch.nn, torch.nn.functional

    class FakeQuantLayer(nn.Module):
        """A Conv2d / Linear whose input and weight pass through lwc's int8 fake-quant."""

        def __init__(self, layer, momentum: float = 0.01):
            super().__init__()
            self.layer = layer
            self.momentum = momentum
            self.register_buffer("lo", torch.tensor(0.0))
            self.register_buffer("hi", torch.tensor(0.0))
            self.register_buffer("observed", torch.tensor(False))

        def forward(self, x):
            if self.training or not bool(self.observed):
                lo, hi = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
                if bool(self.observed):
                    self.lo.mul_(1 - self.momentum).add_(self.momentum * lo)
                    self.hi.mul_(1 - self.momentum).add_(self.momentum * hi)
                else:
                    self.lo.copy_(lo)
                    self.hi.copy_(hi)
                    self.observed.fill_(True)
            scale, zp = activation_qparams(float(self.lo), float(self.hi))
            xq = fake_quant_activation(x, scale, zp)
            wq = fake_quant_weight(self.layer.weight)
            if isinstance(self.layer, nn.Conv2d):
                return self.layer._conv_forward(xq, wq, self.layer.bias)
            return f.linear(xq, wq, self.layer.bias)

    return FakeQuantLayer


def prepare_qat(model, calib_x):
    """A copy of ``model`` with every ``Conv2d`` / ``Linear`` wrapped in lwc's int8 fake-quant.

    Args:
        model: ``torch.nn.Module``.
        calib_x: float32 ``[N, ...]`` batch that sets the initial activation ranges (min/max).
    Raises:
        LwcError: the model has no Conv2d / Linear.
    """
    torch = _torch()
    nn = torch.nn
    cls = _qat_module_class()
    model = copy.deepcopy(model)
    found = 0

    def wrap(parent):
        nonlocal found
        for name, child in parent.named_children():
            if isinstance(child, (nn.Conv2d, nn.Linear)):
                setattr(parent, name, cls(child))
                found += 1
            else:
                wrap(child)

    wrap(model)
    if not found:
        raise LwcError("prepare_qat: the model has no nn.Conv2d or nn.Linear to quantize")
    model.eval()
    with torch.no_grad():
        model(torch.as_tensor(np.asarray(calib_x)).float())
    return model


def strip_qat(model):
    """The float model under a :func:`prepare_qat` one (wrappers replaced by their layers)."""
    nn = _torch().nn
    cls_name = "FakeQuantLayer"
    model = copy.deepcopy(model)

    def unwrap(parent):
        for name, child in parent.named_children():
            if type(child).__name__ == cls_name:
                setattr(parent, name, child.layer)
            else:
                unwrap(child)

    unwrap(model)
    return model.eval() if isinstance(model, nn.Module) else model


def qat_finetune(model, data, *, teacher=None, temperature: float = 4.0, alpha: float = 0.5,
                 epochs: int = 3, lr: float = 1e-4, batch_size: int = 64, seed: int = 0,
                 calib_size: int = 256, on_epoch: Callable | None = None):
    """Quantization-aware fine-tuning with lwc's int8 fake-quant and distillation.

    Args:
        model: ``torch.nn.Module`` (not changed).
        data: ``(x, y)`` float32 ``[N, ...]`` / int64 ``[N]``.
        teacher: distillation teacher (default: ``model`` itself, in float).
        temperature, alpha, epochs, lr, batch_size, seed, on_epoch: as in
            :func:`lwc.compress.training.distill` (``alpha`` weights the hard labels).
        calib_size: samples that set the initial ranges.
    Returns:
        the fine-tuned float model (fake-quant removed: :func:`strip_qat`), eval mode.
    Raises:
        LwcError: bad data, teacher or hyper-parameters.
    """
    torch = _torch()
    x, y = as_dataset(data)
    soft = teacher_logits(teacher if teacher is not None else model, x)
    qat = prepare_qat(model, x[:calib_size])
    torch.manual_seed(seed)
    _train(qat, x, y, soft, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
           temperature=temperature, alpha=alpha, on_epoch=on_epoch)
    return strip_qat(qat)
