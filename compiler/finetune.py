"""A short masked fine-tune / distillation hook for torch models: an API, not a promise.

``lwc prune`` prunes ONNX weights by magnitude without retraining and says plainly that
recovering accuracy needs fine-tuning. Users who still have the torch model can do that
here before exporting to ONNX::

    from lwc.finetune import masked_finetune
    model = masked_finetune(model, batches, method="block:1x4", amount=0.8, steps=500)
    torch.onnx.export(model, example, "pruned.onnx")   # zeros in place
    # lwc compile pruned.onnx --sparsity auto ...

What it does:

1. masks: the same magnitude criterion as ``lwc prune`` (:mod:`lwc.prune`) on every
   ``nn.Linear`` and ``nn.Conv1d/2d/3d`` weight viewed as ``[out, in]``:
   ``unstructured`` (global smallest ``|w|``), ``unstructured:layer``, ``block:RxC``
   (blocks with the smallest mean ``|w|``, per layer), ``channel:l1|l2`` (output channels
   with the smallest L1 / L2 norm, per layer, at most all but one). Channel pruning
   differs from the ONNX pruner: it ranks each layer's channels on their own (``lwc
   prune`` ranks channels tied across layers together), it also masks the layer's bias
   and the ``BatchNorm`` registered right after a conv (so a pruned channel is exactly
   zero and ``lwc compile`` can delete it), and it leaves the last prunable layer
   (usually the classifier: its outputs are the model's) alone;
2. the masks are applied with ``torch.nn.utils.prune.custom_from_mask``, so pruned
   weights stay exactly zero while training;
3. training: Adam on a distillation loss against the unpruned teacher (a frozen copy of
   the model taken before pruning, or ``teacher``): mean squared error of the outputs
   (``loss="mse"``) or KL divergence of the softened class distributions
   (``loss="kl"``, temperature ``T``, scaled by ``T**2``);
4. ``torch.nn.utils.prune.remove`` makes the zeros permanent; the module comes back in
   eval mode, ready for ``torch.onnx.export``.

How much accuracy this recovers depends on data, steps and learning rate; lwc does not
measure accuracy. torch is an optional dependency (``pip install 'lwc[torch]'``).
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import numpy as np

from lwc.errors import LwcError
from lwc.prune import _block, _smallest, _unstructured, check_amount, parse_method


def _torch():
    try:
        import torch
    except ImportError:
        raise LwcError("lwc.finetune needs torch: pip install 'lwc[torch]'") from None
    return torch


def prunable_layers(model) -> dict[str, object]:
    """``{module name: module}`` of the ``nn.Linear`` and ``nn.Conv1d/2d/3d`` layers, in registration order."""
    nn = _torch().nn
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def prune_masks(model, method: str, amount: float) -> dict[str, object]:
    """Keep-masks (bool tensors, True = kept) by the ``lwc prune`` criterion.

    Args:
        model: a ``torch.nn.Module``.
        method: ``unstructured``, ``unstructured:layer``, ``block:RxC``, ``channel:l1``,
            ``channel:l2`` (see the module docstring).
        amount: fraction in [0, 1) of weights (blocks, channels) to zero.
    Returns:
        ``{parameter name: mask}`` with the parameter's shape, e.g. ``{"fc1.weight": ...}``.
    Raises:
        LwcError: bad method or amount; the model has no Linear/Conv layer.
    """
    torch = _torch()
    meth = parse_method(method)
    amount = check_amount(amount)
    layers = prunable_layers(model)
    if not layers:
        raise LwcError("model has no prunable weights (no nn.Linear or nn.Conv layer)")
    weights = {name: m.weight.detach().cpu().numpy() for name, m in layers.items()}
    if meth.kind == "unstructured":
        pruned = _unstructured(weights, amount, meth.option)
        keep = {f"{n}.weight": pruned[n] != 0 for n in weights}
    elif meth.kind == "block":
        rows, cols = meth.block
        keep = {f"{n}.weight": _block(w, "conv", rows, cols, amount) != 0 for n, w in weights.items()}
    else:
        keep = _channel_masks(model, layers, weights, amount, meth.option)
    return {name: torch.from_numpy(np.ascontiguousarray(mask)) for name, mask in keep.items()}


def _channel_masks(model, layers: dict, weights: dict, amount: float, norm: str) -> dict[str, np.ndarray]:
    """Per layer but the last: the weakest ``amount`` of output channels (weight rows, bias, next BN)."""
    nn = _torch().nn
    modules = list(model.named_modules())
    order = {name: i for i, (name, _) in enumerate(modules)}
    keep = {}
    for name in list(layers)[:-1]:
        w = weights[name]
        rows = w.reshape(w.shape[0], -1)
        scores = np.abs(rows).mean(axis=1) if norm == "l1" else np.sqrt((rows ** 2).mean(axis=1))
        k = min(int(amount * len(scores)), len(scores) - 1)
        dead = _smallest(scores, k)
        keep[f"{name}.weight"] = np.broadcast_to(~dead.reshape((-1,) + (1,) * (w.ndim - 1)), w.shape).copy()
        if layers[name].bias is not None:
            keep[f"{name}.bias"] = ~dead
        following = modules[order[name] + 1] if order[name] + 1 < len(modules) else None
        if following and isinstance(following[1], nn.modules.batchnorm._BatchNorm) and \
                following[1].num_features == len(dead) and following[1].affine:
            keep[f"{following[0]}.weight"] = ~dead
            keep[f"{following[0]}.bias"] = ~dead
    return keep


def _split(model, param_name: str):
    module_name, _, attr = param_name.rpartition(".")
    return model.get_submodule(module_name) if module_name else model, attr


def distillation_loss(student_out, teacher_out, loss: str = "mse", temperature: float = 2.0):
    """Scalar loss of the student's outputs against the teacher's (tensors or tuples of them).

    Args:
        loss: ``mse`` (mean squared error per output, summed) or ``kl`` (KL divergence of
            ``softmax(out / T)`` over the last axis, times ``T**2``; Hinton et al. 2015).
    Raises:
        LwcError: unknown ``loss``.
    """
    torch = _torch()
    f = torch.nn.functional
    pairs = zip(_as_tuple(student_out), _as_tuple(teacher_out))
    if loss == "mse":
        return sum(f.mse_loss(s, t) for s, t in pairs)
    if loss == "kl":
        t2 = temperature * temperature
        return sum(
            f.kl_div(f.log_softmax(s / temperature, -1), f.log_softmax(t / temperature, -1),
                     reduction="batchmean", log_target=True) * t2
            for s, t in pairs
        )
    raise LwcError(f"unknown distillation loss {loss!r}; expected mse or kl")


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def masked_finetune(
    model,
    batches: Iterable,
    method: str = "unstructured",
    amount: float = 0.5,
    *,
    masks: dict | None = None,
    steps: int = 100,
    teacher=None,
    lr: float = 1e-4,
    loss: str = "mse",
    temperature: float = 2.0,
    history: list | None = None,
    on_step: Callable[[int, float], None] | None = None,
):
    """Prune ``model`` by the ``lwc prune`` criterion and fine-tune it against its unpruned self.

    Args:
        model: a ``torch.nn.Module`` (float32); changed in place and returned.
        batches: model inputs: tensors, or tuples of tensors for several inputs; cycled
            for ``steps`` steps (no labels: the teacher's outputs are the targets).
        method, amount: the pruning criterion (:func:`prune_masks`); ignored when
            ``masks`` is given.
        masks: ``{parameter name: bool tensor}`` (True = kept) instead of a criterion.
        steps: optimizer steps (Adam, learning rate ``lr``).
        teacher: the reference model; default a frozen copy of ``model`` taken before pruning.
        loss, temperature: see :func:`distillation_loss`.
        history: a list that receives the loss (float) of every step.
        on_step: called as ``on_step(step, loss)`` after every step.
    Returns:
        ``model`` in eval mode with the pruned weights exactly zero and no pruning hooks
        left (``torch.nn.utils.prune.remove``), ready for ``torch.onnx.export``.
    Raises:
        LwcError: torch missing, bad method/amount/loss, no batches, a mask naming an
            unknown parameter or of the wrong shape.
    """
    torch = _torch()
    from torch.nn.utils import prune as torch_prune

    batches = list(batches)
    if not batches:
        raise LwcError("masked_finetune needs at least one batch of inputs")
    if steps < 0:
        raise LwcError(f"steps must be >= 0, got {steps}")
    if teacher is None:
        teacher = copy.deepcopy(model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    masks = masks if masks is not None else prune_masks(model, method, amount)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise LwcError(f"mask for {name!r}: the model has no such parameter")
        if tuple(mask.shape) != tuple(params[name].shape):
            raise LwcError(f"mask for {name!r} has shape {tuple(mask.shape)}, the parameter "
                           f"{tuple(params[name].shape)}")
        module, attr = _split(model, name)
        torch_prune.custom_from_mask(module, attr, mask.to(params[name].device, torch.bool))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        inputs = _as_tuple(batches[step % len(batches)])
        with torch.no_grad():
            target = teacher(*inputs)
        value = distillation_loss(model(*inputs), target, loss, temperature)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        number = value.item()
        if history is not None:
            history.append(number)
        if on_step is not None:
            on_step(step, number)
    for name in masks:
        torch_prune.remove(*_split(model, name))
    return model.eval()
