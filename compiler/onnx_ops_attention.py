"""ONNX Attention and RotaryEmbedding (opset 23+) as Relax ops.

TVM 0.27's importer converts only the com.microsoft Attention form. The math follows the
ONNX spec and its reference implementation (onnx/reference/ops/op_attention.py):

* 3-D Q/K/V [B, S, heads * D] are split into heads ([B, heads, S, D]) with ``q_num_heads``
  / ``kv_num_heads``; the output is merged back;
* past_key / past_value are concatenated before K / V (the present outputs);
* scale s = ``scale`` or 1/sqrt(D), applied as sqrt(s) to Q and to K;
* qk = (Q sqrt(s)) (K sqrt(s))^T, then ``softcap``: c * tanh(qk / c);
* bias: attn_mask (bool: True -> 0, False -> -inf; padded to the KV length with -inf),
  the causal frontier j <= i + offset (offset = past length, or per batch
  nonpad_kv_seqlen[b] - q_len), the sliding window (``left_window_size`` /
  ``right_window_size``), and keys at j >= nonpad_kv_seqlen[b] masked;
* grouped-query attention repeats each KV head q_heads / kv_heads times;
* softmax (in ``softmax_precision`` if given) of qk + bias; a row whose bias is all -inf
  gives zeros; Y = softmax @ V;
* qk_matmul_output: mode 0/1 qk (after softcap), 2 qk + bias, 3 the softmax.
"""

from __future__ import annotations

import numpy as np
from lwc.onnx_ops_common import OnnxOpConverter, const, dtype_of, emit, shape_of
from onnx import helper as onnx_helper
from tvm import relax

_op = relax.op


def _heads(bb, x, heads: int):
    """[B, S, heads * D] -> [B, heads, S, D]."""
    b, s, hidden = shape_of(x, "Attention")
    return emit(bb, _op.permute_dims(_op.reshape(x, [b, s, heads, hidden // heads]), [0, 2, 1, 3]))


def _neg_inf_where_not(bb, allowed, dt):
    return emit(bb, _op.where(allowed, const(0, dt), const(-np.inf, dt)))


def _frontier(q_len: int, kv_len: int, offset, left: int, right: int, causal: bool):
    """Allowed (i, j) as a numpy bool [q, kv] (scalar offset) for the causal / window rules."""
    i = np.arange(q_len).reshape(q_len, 1) + offset
    j = np.arange(kv_len).reshape(1, kv_len)
    allowed = np.ones((q_len, kv_len), dtype=bool)
    if causal:
        allowed &= j <= i
    if left >= 0:
        allowed &= (i - j) <= left
    if right >= 0:
        allowed &= (j - i) <= right
    return allowed


def _per_batch(bb, nonpad):
    """nonpad_kv_seqlen [B] as int64 [B, 1, 1, 1]."""
    lens = emit(bb, _op.astype(nonpad, "int64"))
    return emit(bb, _op.reshape(lens, [shape_of(lens, "Attention")[0], 1, 1, 1]))


def _frontier_per_batch(bb, nonpad, q_len: int, kv_len: int, left: int, right: int, causal: bool):
    """Allowed [B, 1, q, kv] for an offset per batch entry (nonpad_kv_seqlen[b] - q_len)."""
    offset = emit(bb, _op.subtract(_per_batch(bb, nonpad), const(q_len, "int64")))
    i = _op.add(const(np.arange(q_len).reshape(1, 1, q_len, 1), "int64"), offset)
    j = const(np.arange(kv_len).reshape(1, 1, 1, kv_len), "int64")
    allowed = None

    def both(a, b):
        return b if a is None else _op.logical_and(a, b)

    if causal:
        allowed = both(allowed, _op.less_equal(j, i))
    if left >= 0:
        allowed = both(allowed, _op.less_equal(_op.subtract(i, j), const(left, "int64")))
    if right >= 0:
        allowed = both(allowed, _op.less_equal(_op.subtract(j, i), const(right, "int64")))
    return emit(bb, allowed)


class Attention(OnnxOpConverter):
    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        q, k, v = inputs[0], inputs[1], inputs[2]
        mask, past_k, past_v, nonpad = inputs[3], inputs[4], inputs[5], inputs[6]
        dt = dtype_of(q)
        rank = len(shape_of(q, "Attention"))
        if rank == 3:
            q = _heads(bb, q, int(attr["q_num_heads"]))
            k = _heads(bb, k, int(attr["kv_num_heads"]))
            v = _heads(bb, v, int(attr["kv_num_heads"]))
        batch, q_heads, q_len, head = shape_of(q, "Attention")
        scale = attr.get("scale")
        scale = 1 / np.sqrt(head) if scale is None else float(scale)
        root = const(np.dtype(dt).type(np.sqrt(scale)), dt)
        if past_k is not None:
            k = emit(bb, _op.concat([past_k, k], axis=2))
            v = emit(bb, _op.concat([past_v, v], axis=2))
        present_k, present_v = k, v
        kv_heads, kv_len = shape_of(k, "Attention")[1:3]
        past_len = shape_of(past_k, "Attention")[2] if past_k is not None else 0

        bias = cls._bias(bb, attr, mask, nonpad, past_k is not None, past_len, q_len, kv_len, dt)
        if q_heads != kv_heads and q_heads % kv_heads == 0:
            k = emit(bb, _op.repeat(k, q_heads // kv_heads, axis=1))
            v = emit(bb, _op.repeat(v, q_heads // kv_heads, axis=1))
        acc = "float32" if dt == "float16" else None  # fp16: accumulate in fp32, round once
        qk = emit(bb, _op.matmul(_op.multiply(q, root),
                                 _op.permute_dims(_op.multiply(k, root), [0, 1, 3, 2]), out_dtype=acc))
        qk = emit(bb, _op.astype(qk, dt)) if acc else qk
        softcap = attr.get("softcap")
        if softcap is not None and float(softcap) > 0:
            c = const(float(softcap), dt)
            qk = emit(bb, _op.multiply(_op.tanh(_op.divide(qk, c)), c))
        with_bias = qk if bias is None else emit(bb, _op.add(qk, bias))
        precision = attr.get("softmax_precision")
        logits = with_bias
        if precision is not None:
            logits = emit(bb, _op.astype(logits, np.dtype(onnx_helper.tensor_dtype_to_np_dtype(int(precision))).name))
        probs = emit(bb, _op.nn.softmax(logits, axis=-1))
        if bias is not None:
            # a row of -inf: TVM's max starts from the lowest finite value, not -inf
            lowest = float(np.finfo(dtype_of(bias)).min)
            masked_row = emit(bb, _op.less_equal(_op.max(bias, axis=[-1], keepdims=True),
                                           const(lowest, dtype_of(bias))))
            probs = emit(bb, _op.where(masked_row, const(0, dtype_of(probs)), probs))
        probs = emit(bb, _op.astype(probs, dt))
        y = emit(bb, _op.matmul(probs, v, out_dtype="float32" if dt == "float16" else None))
        y = emit(bb, _op.astype(y, dt)) if dt == "float16" else y
        if rank == 3:
            y = emit(bb, _op.permute_dims(y, [0, 2, 1, 3]))
            y = emit(bb, _op.reshape(y, [batch, q_len, -1]))
        mode = int(attr.get("qk_matmul_output_mode", 0))
        qk_out = {2: with_bias, 3: probs}.get(mode, qk)
        n_out = attr["tvm_custom"]["num_outputs"]
        outs = [y, present_k, present_v, qk_out][:max(n_out, 1)]
        return outs[0] if len(outs) == 1 else relax.Tuple(outs)

    @staticmethod
    def _bias(bb, attr, mask, nonpad, has_past, past_len, q_len, kv_len, dt):
        """The additive bias (None when nothing is masked)."""
        causal = bool(int(attr.get("is_causal", 0)))
        left = int(attr.get("left_window_size", -1))
        right = int(attr.get("right_window_size", -1))
        bias = None
        if mask is not None:
            m_shape = shape_of(mask, "Attention")
            is_bool = dtype_of(mask) == "bool"
            pad = kv_len - m_shape[-1]
            if pad > 0:
                fill = np.zeros(m_shape[:-1] + [pad], dtype=bool) if is_bool else np.full(
                    m_shape[:-1] + [pad], -np.inf, dtype=dtype_of(mask))
                mask = emit(bb, _op.concat([mask, const(fill, dtype_of(mask))], axis=-1))
            bias = _neg_inf_where_not(bb, mask, dt) if is_bool else mask
        rules = causal or left >= 0 or right >= 0
        if rules:
            if nonpad is not None and not has_past:
                allowed = _frontier_per_batch(bb, nonpad, q_len, kv_len, left, right, causal)
                rule_bias = _neg_inf_where_not(bb, allowed, dt)
            else:
                allowed = _frontier(q_len, kv_len, past_len, left, right, causal)
                rule_bias = const(np.where(allowed, 0, -np.inf).astype(dt), dt)
            bias = rule_bias if bias is None else emit(bb, _op.add(bias, rule_bias))
        if nonpad is not None:
            keys = const(np.arange(kv_len).reshape(1, 1, 1, kv_len), "int64")
            valid = _op.less(keys, _per_batch(bb, nonpad))
            pad_bias = _neg_inf_where_not(bb, emit(bb, valid), dt)
            bias = pad_bias if bias is None else emit(bb, _op.add(bias, pad_bias))
        return bias


class RotaryEmbedding(OnnxOpConverter):
    """Rotate the first ``rotary_embedding_dim`` features of each head (ONNX spec,
    onnx/reference/ops/op_rotary_embedding.py): with (x1, x2) the two halves (or the even
    and odd features when ``interleaved``) and cos/sin from the caches (gathered by
    position_ids when given), real = cos x1 - sin x2, imag = sin x1 + cos x2."""

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        x, cos, sin, positions = inputs[0], inputs[1], inputs[2], inputs[3]
        shape = shape_of(x, "RotaryEmbedding")
        if len(shape) == 4:  # [B, heads, S, D] -> [B, S, heads, D]
            x4 = emit(bb, _op.permute_dims(x, [0, 2, 1, 3]))
        else:
            heads = int(attr["num_heads"])
            x4 = emit(bb, _op.reshape(x, [shape[0], shape[1], heads, shape[2] // heads]))
        b, s, h, d = shape_of(x4, "RotaryEmbedding")
        rot = int(attr.get("rotary_embedding_dim", 0)) or d
        if positions is not None:
            cos = emit(bb, _op.take(cos, positions, axis=0))
            sin = emit(bb, _op.take(sin, positions, axis=0))
        cos = emit(bb, _op.expand_dims(cos, axis=2))
        sin = emit(bb, _op.expand_dims(sin, axis=2))
        x_rot = emit(bb, _op.strided_slice(x4, axes=[3], begin=[0], end=[rot]))
        interleaved = int(attr.get("interleaved", 0))
        if interleaved:
            pairs = emit(bb, _op.reshape(x_rot, [b, s, h, rot // 2, 2]))
            x1 = emit(bb, _op.squeeze(_op.strided_slice(pairs, axes=[4], begin=[0], end=[1]), axis=[4]))
            x2 = emit(bb, _op.squeeze(_op.strided_slice(pairs, axes=[4], begin=[1], end=[2]), axis=[4]))
        else:
            x1 = emit(bb, _op.strided_slice(x_rot, axes=[3], begin=[0], end=[rot // 2]))
            x2 = emit(bb, _op.strided_slice(x_rot, axes=[3], begin=[rot // 2], end=[rot]))
        real = emit(bb, _op.subtract(_op.multiply(cos, x1), _op.multiply(sin, x2)))
        imag = emit(bb, _op.add(_op.multiply(sin, x1), _op.multiply(cos, x2)))
        if interleaved:
            both = emit(bb, _op.stack([real, imag], axis=-1))
            rotated = emit(bb, _op.reshape(both, [b, s, h, rot]))
        else:
            rotated = emit(bb, _op.concat([real, imag], axis=-1))
        if rot < d:
            rest = emit(bb, _op.strided_slice(x4, axes=[3], begin=[rot], end=[d]))
            rotated = emit(bb, _op.concat([rotated, rest], axis=-1))
        if len(shape) == 4:
            return emit(bb, _op.permute_dims(rotated, [0, 2, 1, 3]))
        return emit(bb, _op.reshape(rotated, shape))


CONVERTERS = {"Attention": Attention, "RotaryEmbedding": RotaryEmbedding}
