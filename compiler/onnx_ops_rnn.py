"""ONNX RNN, GRU and LSTM as Relax ops, unrolled over the static sequence length.

TVM 0.27's Relax ONNX importer has no recurrent ops. lwc compiles for static shapes, so
the sequence length T is known and each direction unrolls into T steps of matmul +
element-wise ops. The math, from the ONNX operator spec (onnx/docs/Operators.md, RNN /
GRU / LSTM), with ``*`` a matmul against the transposed weight and ``(.)`` elementwise:

* RNN:  H_t = f(X_t*Wi + H_{t-1}*Ri + Wbi + Rbi)                         (default f = Tanh)
* GRU (gate order z, r, h in W, R, B; default f = Sigmoid, g = Tanh):
  z_t = f(X_t*Wz + H_{t-1}*Rz + Wbz + Rbz);  r_t = f(X_t*Wr + H_{t-1}*Rr + Wbr + Rbr)
  h_t = g(X_t*Wh + (r_t (.) H_{t-1})*Rh + Rbh + Wbh)        linear_before_reset = 0
  h_t = g(X_t*Wh + r_t (.) (H_{t-1}*Rh + Rbh) + Wbh)        linear_before_reset != 0
  H_t = (1 - z_t) (.) h_t + z_t (.) H_{t-1}
* LSTM (gate order i, o, f, c; peepholes P = [Pi, Po, Pf]; default f = Sigmoid, g = h = Tanh):
  i_t = f(X_t*Wi + H_{t-1}*Ri + Pi (.) C_{t-1} + Wbi + Rbi)
  f_t = f(X_t*Wf + H_{t-1}*Rf + Pf (.) C_{t-1} + Wbf + Rbf)     (input_forget: f_t = 1 - i_t)
  c_t = g(X_t*Wc + H_{t-1}*Rc + Wbc + Rbc);  C_t = f_t (.) C_{t-1} + i_t (.) c_t
  o_t = f(X_t*Wo + H_{t-1}*Ro + Po (.) C_t + Wbo + Rbo);  H_t = o_t (.) h(C_t)

``clip`` clips every pre-activation value to [-clip, clip]. Directions: forward, reverse
(steps T-1 .. 0), bidirectional (both, activations listed forward first). ``sequence_lens``
masks steps t >= len[b]: the state keeps its value and Y is 0 there, which also gives the
reverse direction its per-batch start at len[b] - 1. ``layout = 1`` (batch first) is a
transpose of X, the initial states and the outputs.

Outputs: Y [T, num_directions, B, H], Y_h [num_directions, B, H] (and LSTM's Y_c).
"""

from __future__ import annotations

from lwc.onnx_ops_common import (
    OnnxOpConverter,
    attr_str,
    const,
    dtype_of,
    emit,
    shape_of,
    take_index,
)
from tvm import relax

_op = relax.op

#: ONNX activation name -> (number of alpha values, number of beta values, defaults)
_ACTIVATIONS = {
    "relu": (0, 0, ()), "tanh": (0, 0, ()), "sigmoid": (0, 0, ()), "softsign": (0, 0, ()),
    "softplus": (0, 0, ()), "affine": (1, 1, (1.0, 0.0)), "leakyrelu": (1, 0, (0.01,)),
    "thresholdedrelu": (1, 0, (1.0,)), "scaledtanh": (1, 1, (1.0, 1.0)),
    "hardsigmoid": (1, 1, (0.2, 0.5)), "elu": (1, 0, (1.0,)),
}


def _activation_funcs(attr: dict, defaults: tuple[str, ...], num_directions: int) -> list:
    """One callable per activation slot, alphas and betas consumed in order (as onnxruntime)."""
    names = [attr_str({"a": a}, "a", "") for a in attr.get("activations", ())]
    if not names:
        names = list(defaults) * num_directions
    elif len(names) == len(defaults) and num_directions == 2:
        names = names * 2
    alphas = list(attr.get("activation_alpha", ()))
    betas = list(attr.get("activation_beta", ()))
    funcs = []
    for name in names:
        key = name.lower()
        if key not in _ACTIVATIONS:
            raise ValueError(f"recurrent activation {name!r} is not supported")
        n_alpha, n_beta, default = _ACTIVATIONS[key]
        params = list(default)
        if n_alpha:
            params[0] = alphas.pop(0) if alphas else params[0]
        if n_beta:
            params[1] = betas.pop(0) if betas else params[1]
        funcs.append((key, params))
    return funcs


def _apply(bb, func, x: relax.Expr) -> relax.Expr:
    key, params = func
    dt = dtype_of(x)
    if key == "relu":
        y = _op.nn.relu(x)
    elif key == "tanh":
        y = _op.tanh(x)
    elif key == "sigmoid":
        y = _op.sigmoid(x)
    elif key == "softsign":
        y = _op.divide(x, _op.add(const(1, dt), _op.abs(x)))
    elif key == "softplus":
        y = _op.log(_op.add(const(1, dt), _op.exp(x)))
    elif key == "affine":
        y = _op.add(_op.multiply(const(params[0], dt), x), const(params[1], dt))
    elif key == "leakyrelu":
        y = _op.where(_op.greater_equal(x, const(0, dt)), x, _op.multiply(const(params[0], dt), x))
    elif key == "thresholdedrelu":
        y = _op.where(_op.greater(x, const(params[0], dt)), x, const(0, dt))
    elif key == "scaledtanh":
        y = _op.multiply(const(params[0], dt), _op.tanh(_op.multiply(const(params[1], dt), x)))
    elif key == "hardsigmoid":
        lin = _op.add(_op.multiply(const(params[0], dt), x), const(params[1], dt))
        y = _op.clip(lin, 0.0, 1.0)
    else:  # elu
        neg = _op.multiply(const(params[0], dt), _op.subtract(_op.exp(x), const(1, dt)))
        y = _op.where(_op.greater_equal(x, const(0, dt)), x, neg)
    return emit(bb, y)


class _Recurrent(OnnxOpConverter):
    """Shared unrolling: subclasses give the gate count, defaults and one step."""

    GATES = 1
    DEFAULT_ACTIVATIONS = ("Tanh",)
    HAS_CELL = False

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return cls._convert(bb, inputs, attr)

    @classmethod
    def _convert(cls, bb, inputs, attr):
        x, w, r = inputs[0], inputs[1], inputs[2]
        b, seq_lens, init_h = inputs[3], inputs[4], inputs[5]
        init_c = inputs[6] if cls.HAS_CELL else None
        peep = inputs[7] if cls.HAS_CELL else None
        name = cls.__name__
        dt = dtype_of(x)
        direction = attr_str(attr, "direction", "forward")
        num_dir = 2 if direction == "bidirectional" else 1
        layout = int(attr.get("layout", 0))
        if layout:
            x = emit(bb, _op.permute_dims(x, [1, 0, 2]))
            init_h = init_h if init_h is None else emit(bb, _op.permute_dims(init_h, [1, 0, 2]))
            init_c = init_c if init_c is None else emit(bb, _op.permute_dims(init_c, [1, 0, 2]))
        steps, batch, _ = shape_of(x, name)
        hidden = int(attr.get("hidden_size", shape_of(r, name)[-1]))
        funcs = _activation_funcs(attr, cls.DEFAULT_ACTIVATIONS, num_dir)
        per_dir = len(funcs) // num_dir
        clip = attr.get("clip")
        masks = cls._masks(bb, seq_lens, steps, batch, dt)

        ys, hs, cs = [], [], []
        for d in range(num_dir):
            state = {
                "w": take_index(bb, w, d), "r": take_index(bb, r, d),
                "b": None if b is None else take_index(bb, b, d),
                "p": None if peep is None else take_index(bb, peep, d),
                "f": funcs[d * per_dir:(d + 1) * per_dir], "clip": clip, "hidden": hidden,
                "attr": attr,
            }
            h = take_index(bb, init_h, d) if init_h is not None else const(
                [[0.0] * hidden] * batch, dt)
            c = None
            if cls.HAS_CELL:
                c = take_index(bb, init_c, d) if init_c is not None else const(
                    [[0.0] * hidden] * batch, dt)
            xw = cls._input_projection(bb, x, state)
            reverse = direction == "reverse" or d == 1
            y_steps = [None] * steps
            for t in (reversed(range(steps)) if reverse else range(steps)):
                h_new, c_new = cls._step(bb, take_index(bb, xw, t), h, c, state)
                if masks is not None:
                    m = masks[t]
                    h_new = emit(bb, _op.where(m, h_new, h))
                    if c_new is not None:
                        c_new = emit(bb, _op.where(m, c_new, c))
                    y_steps[t] = emit(bb, _op.where(m, h_new, const(0, dt)))
                else:
                    y_steps[t] = h_new
                h, c = h_new, c_new
            ys.append(emit(bb, _op.stack(y_steps, axis=0)))  # [T, B, H]
            hs.append(h)
            cs.append(c)
        y = emit(bb, _op.stack(ys, axis=1))  # [T, D, B, H]
        y_h = emit(bb, _op.stack(hs, axis=0))  # [D, B, H]
        outs = [y, y_h]
        if cls.HAS_CELL:
            outs.append(emit(bb, _op.stack(cs, axis=0)))
        if layout:
            outs = [emit(bb, _op.permute_dims(outs[0], [2, 0, 1, 3]))] + [
                emit(bb, _op.permute_dims(o, [1, 0, 2])) for o in outs[1:]]
        return relax.Tuple(outs)

    @staticmethod
    def _masks(bb, seq_lens, steps: int, batch: int, dt: str):
        """Per step, a [B, 1] bool mask of batch entries still inside their sequence."""
        if seq_lens is None:
            return None
        lens = emit(bb, _op.reshape(_op.astype(seq_lens, "int64"), [batch, 1]))
        return [emit(bb, _op.less(const(t, "int64"), lens)) for t in range(steps)]

    @classmethod
    def _input_projection(cls, bb, x, state):
        """X*W^T (+ Wb) for every step at once: [T, B, G*H]."""
        xw = _op.matmul(x, _op.permute_dims(state["w"], [1, 0]))
        if state["b"] is not None:
            gh = cls.GATES * state["hidden"]
            wb = _op.strided_slice(state["b"], axes=[0], begin=[0], end=[gh])
            xw = _op.add(xw, wb)
        return emit(bb, xw)

    @classmethod
    def _recurrent_bias(cls, bb, state):
        if state["b"] is None:
            return None
        gh = cls.GATES * state["hidden"]
        return emit(bb, _op.strided_slice(state["b"], axes=[0], begin=[gh], end=[2 * gh]))

    @staticmethod
    def _clip(bb, x, state):
        if state["clip"] is None:
            return x
        limit = float(state["clip"])
        return emit(bb, _op.clip(x, -limit, limit))

    @staticmethod
    def _split(bb, x, parts: int):
        tup = emit(bb, _op.split(x, parts, axis=-1))
        return [emit(bb, relax.TupleGetItem(tup, i)) for i in range(parts)]

    @classmethod
    def _hidden_projection(cls, bb, h, state):
        hr = _op.matmul(h, _op.permute_dims(state["r"], [1, 0]))
        rb = cls._recurrent_bias(bb, state)
        return emit(bb, hr if rb is None else _op.add(hr, rb))


class RNN(_Recurrent):
    GATES = 1
    DEFAULT_ACTIVATIONS = ("Tanh",)

    @classmethod
    def _step(cls, bb, xw, h, c, state):
        pre = emit(bb, _op.add(xw, cls._hidden_projection(bb, h, state)))
        return _apply(bb, state["f"][0], cls._clip(bb, pre, state)), None


class GRU(_Recurrent):
    GATES = 3
    DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh")

    @classmethod
    def _step(cls, bb, xw, h, c, state):
        f, g = state["f"]
        hidden = state["hidden"]
        xz, xr, xh = cls._split(bb, xw, 3)
        r_w = state["r"]
        rb = cls._recurrent_bias(bb, state)
        rz_rr = _op.strided_slice(r_w, axes=[0], begin=[0], end=[2 * hidden])
        r_h = emit(bb, _op.strided_slice(r_w, axes=[0], begin=[2 * hidden], end=[3 * hidden]))
        hzr = _op.matmul(h, _op.permute_dims(rz_rr, [1, 0]))
        if rb is not None:
            hzr = _op.add(hzr, _op.strided_slice(rb, axes=[0], begin=[0], end=[2 * hidden]))
        hz, hr = cls._split(bb, emit(bb, hzr), 2)
        z = _apply(bb, f, cls._clip(bb, emit(bb, _op.add(xz, hz)), state))
        r = _apply(bb, f, cls._clip(bb, emit(bb, _op.add(xr, hr)), state))
        rbh = None if rb is None else emit(bb, _op.strided_slice(
            rb, axes=[0], begin=[2 * hidden], end=[3 * hidden]))
        r_h_t = _op.permute_dims(r_h, [1, 0])
        if int(state["attr"].get("linear_before_reset", 0)):
            hh = _op.matmul(h, r_h_t)
            hh = emit(bb, hh if rbh is None else _op.add(hh, rbh))
            pre = _op.add(xh, _op.multiply(r, hh))
        else:
            hh = _op.matmul(emit(bb, _op.multiply(r, h)), r_h_t)
            pre = _op.add(xh, hh if rbh is None else _op.add(hh, rbh))
        n = _apply(bb, g, cls._clip(bb, emit(bb, pre), state))
        dt = dtype_of(xw)
        h_new = _op.add(_op.multiply(_op.subtract(const(1, dt), z), n), _op.multiply(z, h))
        return emit(bb, h_new), None


class LSTM(_Recurrent):
    GATES = 4
    DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")
    HAS_CELL = True

    @classmethod
    def _step(cls, bb, xw, h, c, state):
        f, g, hf = state["f"]
        gates = emit(bb, _op.add(xw, cls._hidden_projection(bb, h, state)))
        gi, go, gf, gc = cls._split(bb, gates, 4)
        p = state["p"]
        if p is not None:
            pi, po, pf = cls._split(bb, p, 3)
            gi = emit(bb, _op.add(gi, _op.multiply(pi, c)))
            gf = emit(bb, _op.add(gf, _op.multiply(pf, c)))
        i = _apply(bb, f, cls._clip(bb, gi, state))
        if int(state["attr"].get("input_forget", 0)):
            forget = emit(bb, _op.subtract(const(1, dtype_of(i)), i))
        else:
            forget = _apply(bb, f, cls._clip(bb, gf, state))
        cand = _apply(bb, g, cls._clip(bb, gc, state))
        c_new = emit(bb, _op.add(_op.multiply(forget, c), _op.multiply(i, cand)))
        if p is not None:
            go = emit(bb, _op.add(go, _op.multiply(po, c_new)))
        o = _apply(bb, f, cls._clip(bb, go, state))
        h_new = emit(bb, _op.multiply(o, _apply(bb, hf, c_new)))
        return h_new, c_new


CONVERTERS = {"RNN": RNN, "GRU": GRU, "LSTM": LSTM}
