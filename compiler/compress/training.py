"""Torch-side training steps of the compression workflow: train, distill, prune + fine-tune.

Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
Neural Network", arXiv:1503.02531, section 2): with teacher logits ``t``, student logits
``s``, temperature ``T`` and hard labels ``y``,

    L = alpha * CE(softmax(s), y) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

``alpha`` weights the **hard labels**; ``1 - alpha`` the soft targets. The ``T^2`` factor
keeps the soft term's gradients the same size as T changes (the paper's section 2.1). KL is
averaged over the batch (``reduction="batchmean"``), CE likewise.

Channel pruning uses lwc's own criterion (:func:`lwc.finetune.prune_masks`, the ``lwc prune``
ranking: output channels with the smallest mean ``|w|`` (L1) or RMS (L2) per layer, the last
layer left alone), applied as ``torch.nn.utils.prune`` masks while the pruned model is
fine-tuned with the distillation loss above; :func:`shrink_sequential` then deletes the
zeroed channels from an ``nn.Sequential`` so the parameters and FLOPs really go down.

Data is ``(x, y)``: ``x`` float32 ``[N, ...]`` (the model's input), ``y`` int64 ``[N]``
class indices, as numpy arrays or torch tensors. torch is the optional ``torch`` extra.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
from lwc.compress._torch import torch as _torch
from lwc.errors import LwcError


def as_dataset(data) -> tuple:
    """``(x, y)`` -> (float32 tensor ``[N, ...]``, int64 tensor ``[N]``).

    Raises:
        LwcError: not a pair, empty, lengths differ, or y is not integral.
    """
    torch = _torch()
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise LwcError("data must be a pair (x, y): x float32 [N, ...], y int64 class indices [N]")
    x, y = (torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in data)
    if x.ndim < 2 or len(x) == 0:
        raise LwcError(f"data x must be [N, ...] with N > 0, got shape {list(x.shape)}")
    if y.shape != (len(x),):
        raise LwcError(f"data y must have shape [{len(x)}] (one label per x), got {list(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise LwcError(f"data y must hold integer class indices, got dtype {y.dtype}")
    return x.float(), y.long()


def distillation_loss(student_logits, teacher_logits, labels, temperature: float = 4.0,
                      alpha: float = 0.5):
    """Hinton et al. (2015) knowledge-distillation loss (a scalar tensor).

    ``alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``, both terms
    averaged over the batch.

    Args:
        student_logits: float tensor ``[B, classes]``.
        teacher_logits: float tensor ``[B, classes]`` (no gradient flows into it).
        labels: int64 tensor ``[B]`` of hard labels (ignored when ``alpha == 0``).
        temperature: ``T > 0``; 1 = plain softmax.
        alpha: weight in [0, 1] of the hard-label cross-entropy.
    Raises:
        LwcError: ``T <= 0``, ``alpha`` outside [0, 1] or mismatched shapes.
    """
    torch = _torch()
    f = torch.nn.functional
    if not temperature > 0:
        raise LwcError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise LwcError(f"alpha (weight of the hard labels) must be in [0, 1], got {alpha}")
    if student_logits.shape != teacher_logits.shape:
        raise LwcError(f"student logits {list(student_logits.shape)} and teacher logits "
                       f"{list(teacher_logits.shape)} differ in shape")
    t = temperature
    soft = f.kl_div(f.log_softmax(student_logits / t, -1), f.log_softmax(teacher_logits.detach() / t, -1),
                    reduction="batchmean", log_target=True) * (t * t)
    if alpha == 0.0:
        return soft
    return alpha * f.cross_entropy(student_logits, labels) + (1.0 - alpha) * soft


def teacher_logits(teacher, x, batch_size: int = 256):
    """The teacher's logits on ``x`` (float32 tensor ``[N, classes]``), computed once.

    Args:
        teacher: a ``torch.nn.Module``, an ONNX model (path or ``ModelProto``, run by
            onnxruntime in chunks of its batch; a model whose output is a Softmax gives
            ``log(probabilities)``, equal to its logits up to a per-row constant, which
            softmax ignores), or a callable
            ``f(x: float32 ndarray [B, ...]) -> logits ndarray [B, classes]``.
        x: float32 ``[N, ...]`` tensor or array.
    Raises:
        LwcError: the teacher is none of the above.
    """
    torch = _torch()
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if isinstance(teacher, torch.nn.Module):
        teacher.eval()
        with torch.no_grad():
            return torch.cat([teacher(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    from lwc.compress.deploy import ends_in_softmax, is_onnx, onnxruntime_predict

    if is_onnx(teacher):
        out = onnxruntime_predict(teacher, x.numpy())
        if ends_in_softmax(teacher):  # probabilities: their logs are the logits up to a constant
            out = np.log(np.clip(out, 1e-12, 1.0))
        return torch.from_numpy(out.astype(np.float32))
    if callable(teacher):
        return torch.cat([torch.as_tensor(np.asarray(teacher(x[i:i + batch_size].numpy())))
                          for i in range(0, len(x), batch_size)]).float()
    raise LwcError(f"teacher must be a torch.nn.Module, an ONNX model or a callable, got {type(teacher).__name__}")


def _train(model, x, y, soft, *, epochs: int, lr: float, batch_size: int, seed: int,
           temperature: float, alpha: float, on_epoch: Callable | None):
    """Adam + cosine learning-rate decay over ``epochs``; loss from :func:`distillation_loss`
    (``soft`` None: plain cross-entropy)."""
    torch = _torch()
    f = torch.nn.functional
    if epochs < 0 or batch_size < 1 or not lr > 0:
        raise LwcError(f"need epochs >= 0, batch_size >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    steps = max(1, epochs * -(-len(x) // batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            out = model(x[idx])
            loss = f.cross_entropy(out, y[idx]) if soft is None else \
                distillation_loss(out, soft[idx], y[idx], temperature, alpha)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, total / len(x))
    return model.eval()


def fit(model, data, *, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
        on_epoch: Callable | None = None):
    """Supervised training with cross-entropy on the hard labels (e.g. the teacher).

    Args:
        model: ``torch.nn.Module`` mapping float32 ``[B, ...]`` to logits ``[B, classes]``;
            trained in place and returned in eval mode.
        data: ``(x, y)`` (see the module docstring).
        epochs, lr, batch_size, seed: Adam with cosine decay, seeded shuffling.
        on_epoch: called as ``on_epoch(epoch, mean loss)``.
    Raises:
        LwcError: bad data or hyper-parameters.
    """
    x, y = as_dataset(data)
    _torch().manual_seed(seed)
    return _train(model, x, y, None, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                  temperature=1.0, alpha=1.0, on_epoch=on_epoch)


def distill(teacher, student, data, temperature: float = 4.0, alpha: float = 0.5, *,
            epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
            soft_targets=None, on_epoch: Callable | None = None):
    """Train ``student`` from ``teacher`` by knowledge distillation (Hinton et al. 2015).

    Loss: :func:`distillation_loss` -- ``alpha`` weights the hard-label cross-entropy,
    ``1 - alpha`` the temperature-``T`` KL term (times ``T^2``).

    Args:
        teacher: see :func:`teacher_logits` (torch module, ONNX model or callable); its
            logits on ``data`` are computed once (no augmentation, so they do not change).
        student: ``torch.nn.Module``, trained in place, returned in eval mode.
        data: ``(x, y)``: float32 ``[N, ...]`` inputs and int64 ``[N]`` labels.
        temperature: ``T > 0`` (Hinton et al. use 1-20; 4 is a common choice).
        alpha: weight of the hard labels in [0, 1].
        soft_targets: precomputed teacher logits ``[N, classes]`` (then ``teacher`` is unused).
        epochs, lr, batch_size, seed, on_epoch: as in :func:`fit`.
    Raises:
        LwcError: bad data, teacher, ``T`` or ``alpha``.
    """
    torch = _torch()
    x, y = as_dataset(data)
    soft = teacher_logits(teacher, x) if soft_targets is None else torch.as_tensor(np.asarray(soft_targets)).float()
    if soft.shape[0] != len(x):
        raise LwcError(f"teacher gave {soft.shape[0]} rows of logits for {len(x)} samples")
    distillation_loss(soft[:1], soft[:1], y[:1], temperature, alpha)  # argument checks, before training
    torch.manual_seed(seed)
    return _train(student, x, y, soft, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                  temperature=temperature, alpha=alpha, on_epoch=on_epoch)


def prune_finetune(model, data, method: str = "channel:l1", amount: float = 0.5, *, teacher=None,
                   temperature: float = 4.0, alpha: float = 0.5, epochs: int = 5, lr: float = 5e-4,
                   batch_size: int = 64, seed: int = 0, shrink: bool = True, soft_targets=None,
                   on_epoch: Callable | None = None):
    """Prune ``model`` by lwc's criterion, fine-tune it by distillation, make the zeros physical.

    Masks come from :func:`lwc.finetune.prune_masks` (the ``lwc prune`` magnitude criterion:
    ``channel:l1|l2``, ``unstructured``, ``block:RxC``; the last layer is never channel-pruned)
    and are held by ``torch.nn.utils.prune`` while training, so pruned weights stay exactly 0.

    Args:
        model: ``torch.nn.Module``; a deep copy is pruned and returned (eval mode).
        data: ``(x, y)``.
        method, amount: the pruning criterion and the fraction in [0, 1) to zero.
        teacher: distillation teacher (default: the unpruned ``model``).
        temperature, alpha, epochs, lr, batch_size, seed, on_epoch: as in :func:`distill`.
        soft_targets: precomputed teacher logits ``[N, classes]`` (then ``teacher`` is unused).
        shrink: for channel methods on an ``nn.Sequential``, delete the zeroed channels
            (:func:`shrink_sequential`); other models keep the zeros in place (``lwc compile``
            deletes what it can: pass RemoveZeroChannels).
    Raises:
        LwcError: bad method/amount (:func:`lwc.prune.parse_method`), data or teacher.
    """
    torch = _torch()
    from lwc.finetune import prune_masks
    from torch.nn.utils import prune as torch_prune

    x, y = as_dataset(data)
    soft = torch.as_tensor(np.asarray(soft_targets)).float() if soft_targets is not None else \
        teacher_logits(teacher if teacher is not None else model, x)
    if soft.shape[0] != len(x):
        raise LwcError(f"teacher gave {soft.shape[0]} rows of logits for {len(x)} samples")
    pruned = copy.deepcopy(model)
    masks = prune_masks(pruned, method, amount)
    for name, mask in masks.items():
        module_name, _, attr = name.rpartition(".")
        torch_prune.custom_from_mask(pruned.get_submodule(module_name), attr, mask)
    torch.manual_seed(seed)
    _train(pruned, x, y, soft, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
           temperature=temperature, alpha=alpha, on_epoch=on_epoch)
    for name in masks:
        module_name, _, attr = name.rpartition(".")
        torch_prune.remove(pruned.get_submodule(module_name), attr)
    if shrink and method.startswith("channel") and isinstance(pruned, torch.nn.Sequential):
        pruned = shrink_sequential(pruned, x[:1])
    return pruned.eval()


def count_parameters(model, nonzero: bool = False) -> int:
    """Number of parameter elements of a torch module (``nonzero``: only the non-zero ones)."""
    return int(sum(int((p != 0).sum()) if nonzero else p.numel() for p in model.parameters()))


# --------------------------------------------------------------------------- shrinking


def _dead_rows(layer) -> np.ndarray:
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    dead = (w == 0).all(dim=1)
    if layer.bias is not None:
        dead &= layer.bias.detach() == 0
    return dead.numpy()


def shrink_sequential(model, example):
    """Delete output channels whose weights and bias are all zero from an ``nn.Sequential``.

    Exact for chains of ``Conv2d`` / ``Linear`` with channel-wise ops between them that map 0
    to 0 (ReLU, max/avg pooling, Dropout, Flatten): a zero channel stays zero up to the next
    layer, whose matching input columns (for a ``Linear`` after ``Flatten``, the ``H*W``
    columns of each channel) are deleted with it. A ``BatchNorm`` between them keeps its
    channel unless its scale and shift are 0 too (``prune_masks`` masks both).

    Args:
        model: ``nn.Sequential`` (not changed; a new one is returned).
        example: one input batch (float32 ``[B, ...]``) to learn the activation shapes.
    Returns:
        a new ``nn.Sequential`` computing the same function (float rounding aside).
    Raises:
        LwcError: ``model`` is not an ``nn.Sequential``.
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(model, nn.Sequential):
        raise LwcError(f"shrink_sequential needs an nn.Sequential, got {type(model).__name__}")
    layers = [copy.deepcopy(m) for m in model]
    shapes, h = [], example
    with torch.no_grad():
        for m in layers:
            shapes.append(tuple(h.shape))
            h = m(h)
    kinds = (nn.Conv2d, nn.Linear)
    passthrough = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Flatten, nn.Identity,
                   nn.BatchNorm2d, nn.BatchNorm1d)
    for i, m in enumerate(layers):
        if not isinstance(m, kinds) or (isinstance(m, nn.Conv2d) and m.groups != 1):
            continue
        j = next((k for k in range(i + 1, len(layers)) if isinstance(layers[k], kinds)), None)
        between = layers[i + 1:j] if j is not None else []
        if j is None or not all(isinstance(b, passthrough) for b in between) or \
                (isinstance(layers[j], nn.Conv2d) and layers[j].groups != 1):
            continue
        dead = _dead_rows(m)
        for b in between:  # BN(0) = beta - gamma * mean / sqrt(var + eps): zero when gamma = beta = 0
            if isinstance(b, (nn.BatchNorm2d, nn.BatchNorm1d)):
                dead &= ((b.weight.detach() == 0) & (b.bias.detach() == 0)).numpy() if b.affine \
                    else np.zeros_like(dead)
        if not dead.any() or dead.all():
            continue
        keep = torch.from_numpy(np.flatnonzero(~dead))
        _keep_outputs(m, keep)
        for b in between:
            if isinstance(b, (nn.BatchNorm2d, nn.BatchNorm1d)):
                _keep_bn(b, keep)
        nxt = layers[j]
        if isinstance(nxt, nn.Linear) and nxt.in_features != len(dead):  # Flatten of [C, H, W]
            per = nxt.in_features // len(dead)
            cols = (keep[:, None] * per + torch.arange(per)[None]).reshape(-1)
        else:
            cols = keep
        _keep_inputs(nxt, cols)
    return nn.Sequential(*layers)


def _keep_outputs(m, keep) -> None:
    m.weight = _param(m.weight.detach()[keep])
    if m.bias is not None:
        m.bias = _param(m.bias.detach()[keep])
    if hasattr(m, "out_channels"):
        m.out_channels = len(keep)
    else:
        m.out_features = len(keep)


def _keep_inputs(m, cols) -> None:
    m.weight = _param(m.weight.detach()[:, cols])
    if hasattr(m, "in_channels"):
        m.in_channels = len(cols)
    else:
        m.in_features = len(cols)


def _keep_bn(b, keep) -> None:
    for name in ("weight", "bias"):
        if getattr(b, name) is not None:
            setattr(b, name, _param(getattr(b, name).detach()[keep]))
    b.running_mean = b.running_mean[keep]
    b.running_var = b.running_var[keep]
    b.num_features = len(keep)


def _param(t):
    return _torch().nn.Parameter(t.clone().contiguous())
