"""Implementation of :mod:`tfcompress.mixed_precision` (see its docstring)."""

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from tfcompress._keras import keras
from tfcompress.errors import TfcompressError
from tfcompress.inspection import check_tf_keras_model

_KINDS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


class MixedPrecisionError(TfcompressError, ValueError):
    """An impossible budget, bit choice or plan (the message says what is feasible)."""


def quantizable_layers(model):
    """Plain Keras Conv2D / DepthwiseConv2D / Dense layers of ``model`` (in model order)."""
    out = [la for la in model.layers if isinstance(la, _KINDS) and getattr(la, "kernel_quantizer", None) is None
           and not hasattr(la, "input_quantizer")]
    if not out:
        raise MixedPrecisionError(f"Model {model.name!r} has no Conv2D, DepthwiseConv2D or Dense layer.")
    return out


def _kernel(layer):
    return layer.depthwise_kernel if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.kernel


def _macs(layer):
    k = int(np.prod(_kernel(layer).shape))
    shape = layer.output_shape
    if isinstance(layer, keras.layers.Dense):
        return k * int(np.prod(shape[1:-1] or [1]))
    return k * int(np.prod(shape[1:3]))


def layer_features(model, x, layers):
    """Outputs of ``layers`` on ``x`` (inference mode), flattened per example: ``[N x d_i]``."""
    probe = keras.Model(model.inputs, [la.output for la in layers])
    outs = probe(x, training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return [np.asarray(o, np.float64).reshape(len(x), -1) for o in outs]


def orm(x, y):
    """Linear CKA of feature matrices ``x (N x d1)``, ``y (N x d2)`` via centred Gram matrices."""
    n = len(x)
    h = np.eye(n) - 1.0 / n
    kx, ky = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    denom = np.linalg.norm(kx) * np.linalg.norm(ky)
    return float((kx * ky).sum() / denom) if denom > 0 else 0.0


def orthogonality_matrix(features):
    return np.array([[orm(a, b) for b in features] for a in features])


@dataclass
class BitPlan:
    """Bits per layer, and how the plan was made. JSON-serializable."""

    method: str
    layers: list = field(default_factory=list)   # dicts: name, type, params, macs, bits, fixed, theta
    budget_bytes: float = None
    bops_budget: float = None

    @property
    def bits(self):
        return {row["name"]: row["bits"] for row in self.layers}

    @property
    def size_bytes(self):
        return sum(row["params"] * row["bits"] / 8 for row in self.layers)

    @property
    def bops(self):
        return sum(row["macs"] * row["bits"] * row.get("activation_bits", 8) for row in self.layers)

    def to_json(self):
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        if not isinstance(data, dict) or "layers" not in data:
            raise MixedPrecisionError("Not a BitPlan JSON document (no 'layers').")
        return cls(**data)

    def table(self):
        lines = [f"{self.method} plan: {self.size_bytes / 1024:.2f} KiB of kernels"
                 + (f" (budget {self.budget_bytes / 1024:.2f} KiB)" if self.budget_bytes else ""),
                 f"{'layer':24s} {'type':16s} {'params':>9s} {'bits':>4s} {'theta':>8s}"]
        for r in self.layers:
            theta = "-" if r.get("theta") is None else f"{r['theta']:.3g}"
            lines.append(f"{r['name']:24s} {r['type']:16s} {r['params']:9d} {r['bits']:4d} {theta:>8s}"
                         + ("  (fixed)" if r.get("fixed") else ""))
        return "\n".join(lines)

    def plot(self, path):
        from matplotlib.figure import Figure   # no pyplot: the user's backend stays as it is

        names = [r["name"] for r in self.layers]
        fig = Figure(figsize=(max(4, 0.5 * len(names) + 2), 3))
        ax = fig.subplots()
        ax.bar(range(len(names)), [r["bits"] for r in self.layers], color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("bits")
        ax.set_title(f"{self.method}: {self.size_bytes / 1024:.1f} KiB")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return path


def _check_choices(bit_choices):
    choices = sorted(set(bit_choices))
    if not choices or any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 16 for b in choices):
        raise MixedPrecisionError(f"bit_choices must be integers in [2, 16], got {bit_choices!r}.")
    return choices


def allocate(values, params, bit_choices, budget_bytes, *, macs=None, bops_budget=None,
             activation_bits=8, maximize=True):
    """Choose one bit width per layer: optimize ``sum_i values[i][k] z_ik`` over the choices
    subject to ``sum P_i b_k/8 z_ik <= budget_bytes`` (and the BOPs budget), exactly (MILP).

    ``values`` is ``(L, K)``: the objective of giving layer i choice k. Returns the list of bits.
    Raises MixedPrecisionError naming the smallest feasible budget if none fits.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    choices = _check_choices(bit_choices)
    values = np.asarray(values, np.float64)
    n, k = len(params), len(choices)
    params = np.asarray(params, np.float64)
    smallest = float(params.sum() * choices[0] / 8)
    if budget_bytes < smallest - 1e-9:
        raise MixedPrecisionError(
            f"Size budget {budget_bytes / 1024:.3f} KiB is infeasible: the smallest plan "
            f"({choices[0]} bits everywhere) needs {smallest / 1024:.3f} KiB.")
    size = np.array([[p * b / 8 for b in choices] for p in params]).ravel()
    rows, lb, ub = [size], [-np.inf], [budget_bytes]
    if bops_budget is not None:
        m = np.asarray(macs, np.float64)
        bops = np.array([[mi * b * activation_bits for b in choices] for mi in m]).ravel()
        min_bops = float((m * choices[0] * activation_bits).sum())
        if bops_budget < min_bops:
            raise MixedPrecisionError(
                f"BOPs budget {bops_budget:.3g} is infeasible: the smallest plan needs {min_bops:.3g}.")
        rows.append(bops), lb.append(-np.inf), ub.append(bops_budget)
    one = np.zeros((n, n * k))
    for i in range(n):
        one[i, i * k:(i + 1) * k] = 1
    constraints = [LinearConstraint(np.array(rows), lb, ub), LinearConstraint(one, 1, 1)]
    c = -values.ravel() if maximize else values.ravel()
    res = milp(c, constraints=constraints, integrality=np.ones(n * k), bounds=Bounds(0, 1))
    if not res.success:
        raise MixedPrecisionError(f"No bit plan satisfies the budgets ({res.message}).")
    z = np.round(res.x).reshape(n, k)
    return [choices[int(np.argmax(z[i]))] for i in range(n)]


def _rows(model, layers, fixed, keep_first_last):
    rows = []
    for i, la in enumerate(layers):
        rows.append({"name": la.name, "type": type(la).__name__, "params": int(np.prod(_kernel(la).shape)),
                     "macs": _macs(la), "bits": keep_first_last if i in fixed else None,
                     "fixed": i in fixed, "theta": None})
    return rows


def _fixed(layers, keep_first_last):
    if keep_first_last is None or len(layers) <= 2:
        return set()
    return {0, len(layers) - 1}


def ompq(model, x_sample, *, bit_choices=(2, 4, 8), size_budget_kb, beta=10.0, keep_first_last=8,
         bops_budget=None, activation_bits=8, max_examples=64):
    """OMPQ bit plan for ``model`` under ``size_budget_kb`` (KiB of kernel weights).

    ``x_sample``: one small batch of real inputs (the official code uses 32 images; at most
    ``max_examples`` are used). ``beta``: 10 in the paper's QAT example, 100 for its PTQ runs.
    """
    check_tf_keras_model(model, "ompq", MixedPrecisionError)
    if size_budget_kb is None or not size_budget_kb > 0:
        raise MixedPrecisionError(f"size_budget_kb must be > 0, got {size_budget_kb!r}.")
    x = np.asarray(x_sample)[:max_examples]
    if len(x) < 2 or not np.isfinite(x).all():
        raise MixedPrecisionError("x_sample needs at least 2 finite examples.")
    layers = quantizable_layers(model)
    feats = layer_features(model, x, layers)
    o = orthogonality_matrix(feats)
    gamma = o.sum(1) - np.diag(o)
    theta = np.exp(-beta * gamma)
    coef = np.array([theta[i:].mean() for i in range(len(theta))])
    # exp(-beta gamma) can be ~1e-13; rescaling keeps the argmax and the solver's tolerances sane.
    coef = coef / max(coef.max(), np.finfo(float).tiny)
    fixed = _fixed(layers, keep_first_last)
    rows = _rows(model, layers, fixed, keep_first_last)
    for r, g, t in zip(rows, gamma, theta):
        r["gamma"], r["theta"] = float(g), float(t)
    free = [i for i in range(len(layers)) if i not in fixed]
    fixed_bytes = sum(rows[i]["params"] * keep_first_last / 8 for i in fixed)
    fixed_bops = sum(rows[i]["macs"] * keep_first_last * activation_bits for i in fixed)
    budget = size_budget_kb * 1024 - fixed_bytes
    choices = _check_choices(bit_choices)
    values = [[coef[i] * b / 8 for b in choices] for i in free]
    try:
        bits = allocate(values, [rows[i]["params"] for i in free], choices, budget,
                        macs=[rows[i]["macs"] for i in free],
                        bops_budget=None if bops_budget is None else bops_budget - fixed_bops,
                        activation_bits=activation_bits)
    except MixedPrecisionError as err:
        if "BOPs" in str(err):
            raise
        smallest = (fixed_bytes + sum(rows[i]["params"] for i in free) * choices[0] / 8) / 1024
        raise MixedPrecisionError(
            f"size_budget_kb={size_budget_kb} is infeasible: the smallest plan ({choices[0]} bits, "
            f"first/last layers at {keep_first_last} bits) needs {smallest:.3f} KiB; the smallest "
            f"feasible size_budget_kb is {smallest:.3f}.") from None
    for i, b in zip(free, bits):
        rows[i]["bits"] = b
    for r in rows:
        r["activation_bits"] = activation_bits
    return BitPlan("OMPQ", rows, budget_bytes=size_budget_kb * 1024, bops_budget=bops_budget)


def uniform_plan(model, bits, *, keep_first_last=8):
    """Every quantizable layer at ``bits`` (first/last at ``keep_first_last``)."""
    _check_choices([bits])
    layers = quantizable_layers(model)
    fixed = _fixed(layers, keep_first_last)
    rows = _rows(model, layers, fixed, keep_first_last)
    for r in rows:
        if r["bits"] is None:
            r["bits"] = bits
        r["activation_bits"] = 8
    return BitPlan(f"uniform {bits}-bit", rows)


def _fake_quant(w, bits):
    """Symmetric per-output-channel uniform quantization of a kernel (numpy)."""
    axes = tuple(range(w.ndim - 1))
    q_max = 2 ** (bits - 1) - 1
    scale = np.maximum(np.abs(w).max(axis=axes, keepdims=True), 1e-12) / q_max
    return np.clip(np.round(w / scale), -q_max - 1, q_max) * scale


def sensitivity_plan(model, x_sample, *, bit_choices=(2, 4, 8), size_budget_kb, keep_first_last=8,
                     max_examples=64):
    """Hessian-free sensitivity baseline: quantize one layer at a time to each bit width,
    measure the mean KL divergence of the model's softmax outputs (or the MSE of non-
    probability outputs) from the float model on ``x_sample``, then minimize the summed
    sensitivity under the same size budget (exact MILP)."""
    x = np.asarray(x_sample)[:max_examples]
    layers = quantizable_layers(model)
    choices = _check_choices(bit_choices)
    ref = model.predict(x, verbose=0)

    def distance(out):
        if ref.ndim == 2 and np.allclose(ref.sum(-1), 1, atol=1e-3) and (ref >= 0).all():
            p, q = np.clip(ref, 1e-12, 1), np.clip(out, 1e-12, 1)
            return float((p * np.log(p / q)).sum(-1).mean())
        return float(((out - ref) ** 2).mean())

    fixed = _fixed(layers, keep_first_last)
    rows = _rows(model, layers, fixed, keep_first_last)
    free = [i for i in range(len(layers)) if i not in fixed]
    sens = []
    for i in free:
        var = _kernel(layers[i])
        original = var.numpy()
        row = []
        for b in choices:
            var.assign(_fake_quant(original, b))
            row.append(distance(model.predict(x, verbose=0)))
        var.assign(original)
        sens.append(row)
    fixed_bytes = sum(rows[i]["params"] * keep_first_last / 8 for i in fixed)
    if size_budget_kb * 1024 - fixed_bytes < sum(rows[i]["params"] for i in free) * choices[0] / 8:
        smallest = (fixed_bytes + sum(rows[i]["params"] for i in free) * choices[0] / 8) / 1024
        raise MixedPrecisionError(f"size_budget_kb={size_budget_kb} is infeasible; the smallest "
                                  f"feasible size_budget_kb is {smallest:.3f}.")
    bits = allocate(sens, [rows[i]["params"] for i in free], choices,
                    size_budget_kb * 1024 - fixed_bytes, maximize=False)
    for i, b, s in zip(free, bits, sens):
        rows[i]["bits"] = b
        rows[i]["sensitivity"] = dict(zip(map(str, choices), s))
    for r in rows:
        r["activation_bits"] = 8
    return BitPlan("sensitivity", rows, budget_bytes=size_budget_kb * 1024)


def apply(model, plan, *, activation_bits=None, x_sample=None):
    """A copy of ``model`` whose planned layers carry LSQ kernel quantizers at the planned
    bits (per output channel for Conv2D/Dense, per tensor for DepthwiseConv2D), weights copied.

    ``activation_bits``: also quantize each planned layer's input with LSQ at this width
    (needs ``x_sample`` to initialize the step sizes on real data).
    """
    from tfcompress import layers as L
    from tfcompress.quantizers import LSQ

    bits = plan.bits
    names = {la.name for la in model.layers}
    missing = sorted(set(bits) - names)
    if missing:
        raise MixedPrecisionError(f"The plan names layers the model does not have: {missing}.")
    if activation_bits is not None and x_sample is None:
        raise MixedPrecisionError("activation_bits needs x_sample to initialize the activation step sizes.")

    def clone(layer):
        config = layer.get_config()
        if layer.name not in bits:
            return layer.__class__.from_config(config)
        b = bits[layer.name]
        act = None if activation_bits is None else LSQ(bits=activation_bits, signed=True)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return L.QuantDepthwiseConv2D(**config, depthwise_quantizer=LSQ(bits=b), input_quantizer=act)
        if isinstance(layer, keras.layers.Conv2D):
            return L.QuantConv2D(**config, kernel_quantizer=LSQ(bits=b, per_channel=True), input_quantizer=act)
        if isinstance(layer, keras.layers.Dense):
            return L.QuantDense(**config, kernel_quantizer=LSQ(bits=b, per_channel=True), input_quantizer=act)
        raise MixedPrecisionError(f"Layer {layer.name!r} ({type(layer).__name__}) cannot carry a bit width.")

    new = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = new.get_layer(layer.name)
        own = {w.name.split("/")[-1]: w for w in target.weights if "quantizer" not in w.name
               and not w.name.split("/")[-2].startswith("lsq")}
        for w in layer.weights:
            own[w.name.split("/")[-1]].assign(w)
    # One eager call initializes every LSQ step size (kernels from the weights, inputs from data).
    sample = x_sample[:32] if x_sample is not None else np.zeros((1,) + tuple(model.input_shape[1:]), np.float32)
    new(np.asarray(sample, np.float32))
    return new
