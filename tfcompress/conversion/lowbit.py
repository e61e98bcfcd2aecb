"""Exact-grid int8 export: the file computes what the trained low-bit Keras model computed.

The TFLite converter re-calibrates every activation range from data and re-quantizes every
kernel to ``max|W| / 127``, so a 2-4-bit grid does not survive into an int8 file. This exporter
writes the flatbuffer itself (:mod:`tfcompress.conversion.fbwriter`) and takes each scale and
zero point from the trained quantizer (:mod:`tfcompress.quantizers.grid`):

* **Kernels.** A quantized kernel ``W = s_c (q - z_c)`` is stored as the integers ``q - z_c``
  with per-output-channel scale ``s_c`` (BatchNorm folded: ``s_c |m_c|``, the sign of ``m_c``
  moved into the integers), times the largest integer ``k_c`` that still fits the container
  (scale ``s_c / k_c``): the same weights, a ``k_c`` times finer accumulator, so the int32
  bias (BatchNorm's shift, in accumulator units) rounds ``k_c`` times less. Kernels trained at
  4 bits or fewer are packed (INT4, INT2 for LiteRT's FULLY_CONNECTED; :mod:`int4`) where the
  target's runtime runs them and stays exact (below).
* **Activations.** An activation quantizer ``clamp(round(x / s + z), qmin, qmax)`` becomes the
  output parameters of the integer operation that produces ``x``: its output scale is ``s``,
  so the kernel's one rounding of ``acc * M`` (Jacob et al. 2018, arXiv 1712.05877) *is* the
  quantizer's rounding, and the clamp is folded into the op's output clamp:

  - a full 256-level grid: int8 saturation is the clamp (``NONE``);
  - ``[0, U]``: zero point ``127 - U`` and a fused ``RELU`` (clamp at the zero point);
  - ``[L, U]`` with ``L < 0 < U``: a fused ``RELU_N1_TO_1`` whose bounds ``Z -+ round(1/S)``
    are placed on ``L`` and ``U`` by storing the scale ``S = 1/max(-L, U)`` and the zero point
    ``127 - U`` (or ``-128 - L``). The stored scale differs from the true ``s`` by
    ``c = s max(-L, U)``; the producer's and consumers' per-channel weight scales absorb ``c``
    (the kernels only use ``M = S_in S_w / S_out``), so every product is unchanged. This is
    only done when every consumer is a convolution or dense layer;
  - otherwise explicit ``MAXIMUM``/``MINIMUM`` ops with int8 constants (exact).

  Max-pooling, reshapes, zero padding and ReLU between the producer and the quantizer commute
  with ``clamp(round(.))``, so the grid moves through them. LSQ+'s fractional offset
  ``beta / s`` goes into the producer's bias and back out through the consumers' biases
  (exact, except at the zero-padded border taps of a SAME convolution, which the report notes).
* **Requantization precision.** TFLite's reference kernels (LiteRT's builtin kernels, TFLite
  Micro) round ``acc * M`` twice (gemmlowp's rounding high-multiply, then a rounding shift):
  for ``M`` in ``[2^-(r+1), 2^-r)`` about ``2^-(r+1)`` of the outputs land one level off, and
  the int32 bias is off by up to ``M/2`` of a level. XNNPACK rounds once (fp32) but does not
  take packed convolutions. So a low-bit input grid (``hi - lo < 255``) is widened by an exact
  int8 ``MUL`` (multiplier 1) to ``m = floor(255 / (hi - lo))`` times its integers when the
  consumer is packed or its multiplier exceeds ``2^-10``, and a kernel is packed only when its
  packed multiplier stays at or below ``2^-9`` (``pack_weights="always"`` packs regardless;
  the report says which and why). An input grid that already fills int8 (8-bit) cannot be
  widened: such an op (int8 and micro targets) runs in 16x8 instead, its input requantized
  exactly to int16 (x128), an int64 bias 128 times finer, the grid's integers written to int16
  with the fused clamp and saturated into int8 by a QUANTIZE of multiplier 1.
* **Classifier head.** An int8 softmax output has steps of 1/256 (close classes tie). With
  float I/O (``io_type="float32"``, int8/micro targets) a final Dense -> Softmax runs in 16x8:
  int8 input requantized exactly to int16 (x128), int64 bias, int16 logits and softmax.
* **Tensors no quantizer governs** (a float stem or head, the model input) are calibrated with
  min/max on the representative data as the TFLite converter does (8-bit PTQ; the report says so).
  One exception (int8/micro): such a tensor between a convolution and a global average whose
  output is on a trained grid stays int16 (:mod:`lowbit_int16`), so the grid's one rounding
  sees the exact mean rather than N values already rounded to 1/255 of their range.

What cannot be exact is refused with the layer's name: 1-bit quantizers (use ``lce``),
integers beyond int8 (power-of-two at 5+ bits, DoReFa 8-bit weights, affine 8-bit weights),
tensor-dependent activation ranges, per-channel activation grids, and layers with no integer
lowering here. A layer trained at 4 bits or fewer whose kernel the target's runtime cannot
store packed is refused unless ``allow_low_bit=True`` (it is then stored as int8; the numbers
are the same).

:func:`grid_agreement` measures, per trained activation grid, how many integers of a converted
file equal the Keras quantizer's (LiteRT's builtin kernels).
"""

import numpy as np

from tfcompress._keras import keras
from tfcompress.conversion import int4 as I4
from tfcompress.conversion.lowbit_emit import _Emitter
from tfcompress.conversion.lowbit_int16 import int16_before_average, int16_head
from tfcompress.conversion.lowbit_ir import (
    LINEAR, fold_batchnorm, fuse_activations, lower, remove_identities,
)
from tfcompress.errors import ConversionError
from tfcompress.inspection import iter_layers

_PASS = ("maxpool", "reshape", "pad", "relu")


# ------------------------------------------------------------------------------ routing
def has_quantizers(model):
    """True when a layer of ``model`` carries a multi-bit (2-8 bit) quantizer or a quantizer
    used as a layer: the models the exact-grid exporter is for."""
    from tfcompress.inspection import layer_precisions

    for layer in iter_layers(model):
        try:
            bits = layer_precisions(layer)
        except ValueError:
            continue
        if any(1 < b <= 16 for b in bits.values()):
            return True
        if hasattr(layer, "integer_grid") and not hasattr(layer, "kernel"):
            return True
    return False


# ------------------------------------------------------------------------- calibration
def _calibration_arrays(representative_data, model, steps):
    from tfcompress.conversion.checks import calibration_batches

    gen = calibration_batches(representative_data, model, steps)
    rows = []
    for i, example in enumerate(gen()):
        if i >= steps:
            break
        rows.append([np.asarray(a, np.float32) for a in example])
    if not rows:
        raise ConversionError("representative_data yielded no examples.")
    return [np.concatenate([r[j] for r in rows]) for j in range(len(rows[0]))]


def _linear_clone(layer):
    """A copy of ``layer`` without its activation, with the same weights, in a model of its own
    (so the user's graph gets no extra nodes)."""
    config = dict(layer.get_config(), activation="linear", name=layer.name + "_linear")
    clone = type(layer).from_config(config)
    inp = keras.Input(tuple(layer.input_shape[1:]))
    model = keras.Model(inp, clone(inp))
    clone.set_weights(layer.get_weights())
    return model


def _calibrate(g, model, arrays):
    """min/max of every value that needs calibrated parameters."""
    need = [v for v in _all_values(g) if v.scale is None and _needs_calibration(v)]
    refs, owners, linear = [], [], {}
    for v in need:
        ref = v.ref
        if isinstance(ref, tuple) and ref[0] == "pooled":
            ref = ref[1]                 # the same numbers as the pooled layer's output
        if isinstance(ref, tuple) and ref[0] == "linear_of":
            # the pre-activation of a layer with a fused softmax: its input, then a linear copy
            linear[id(v)] = ref[1]
            ref = ref[2]
        if ref is None:
            raise ConversionError(f"Tensor {v.name!r} has no Keras tensor to calibrate from "
                                  "(internal error).")
        refs.append(ref)
        owners.append(v)
    if not refs:
        return
    inputs = {id(t): a for t, a in zip(model.inputs, arrays)}
    inner = list({id(r): r for r in refs if id(r) not in inputs}.values())
    computed = {}
    if inner:
        probe = keras.Model(model.inputs, inner)
        outs = probe.predict(arrays if len(arrays) > 1 else arrays[0], batch_size=64, verbose=0)
        outs = outs if isinstance(outs, list) else [outs]
        computed = {id(r): o for r, o in zip(inner, outs)}
    for v, r in zip(owners, refs):
        o = inputs[id(r)] if id(r) in inputs else computed[id(r)]
        if id(v) in linear:
            o = _linear_clone(linear[id(v)]).predict(o, batch_size=64, verbose=0)
        _set_calibrated(v, float(np.min(o)), float(np.max(o)))


def _set_calibrated(v, lo, hi):
    v.range = (lo, hi)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    v.scale = v.stored_scale = float(scale)
    v.zero_point = zp


def _all_values(g):
    seen, out = set(), []
    for v in g.inputs:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    for op in g.ops:
        for v in op.inputs + op.outputs:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def _needs_calibration(v):
    p = v.producer
    return p is None or p.kind in LINEAR + ("add", "mean")


# ------------------------------------------------------------------ activation grids
def _linear_only(v, g):
    """True when every use of ``v`` (through pass-through ops) is a conv/dense input."""
    if v in g.outputs:
        return False
    for c in v.consumers:
        if c.kind in LINEAR:
            continue
        if c.kind in ("maxpool", "reshape", "pad") or (c.kind == "relu" and c.attrs["act"] == "RELU"):
            if not _linear_only(c.outputs[0], g):
                return False
            continue
        return False
    return bool(v.consumers)


def _chain_to_producer(v, g):
    """Walk back from ``v`` through single-use pass-through ops; return (root value, ops)."""
    chain = []
    cur = v
    while cur.producer is not None and (cur.producer.kind in ("maxpool", "reshape") or (
            cur.producer.kind == "relu" and cur.producer.attrs["act"] == "RELU") or (
            cur.producer.kind == "pad" and cur.producer.attrs["value"] == 0.0)):
        src = cur.producer.inputs[0]
        if len(src.consumers) != 1 or src in g.outputs:
            break
        chain.insert(0, cur.producer)
        cur = src
    return cur, chain


def _fold_grids(g):
    """Give every ``quant`` op's grid to the op that produces its input (see the module
    docstring); returns per-quantizer notes for the report."""
    notes = {}
    for q in [op for op in g.ops if op.kind == "quant"]:
        grid = q.attrs["grid"]
        v, vq = q.inputs[0], q.outputs[0]
        s = float(grid.scale.ravel()[0])
        z = float(grid.zero_point.ravel()[0])
        z_int = int(np.round(z))
        f = z - z_int
        lo, hi = grid.qmin - z_int, grid.qmax - z_int
        single = len(v.consumers) == 1 and v not in g.outputs
        root, chain = _chain_to_producer(v, g) if single else (v, [])
        p = root.producer
        note = []
        g.remove(q)
        linear_only = _linear_only(vq, g)
        if single and p is not None and p.kind in LINEAR + ("add", "mean"):
            mode = "linear" if p.kind in LINEAR else "rounding"
        elif single and p is None:
            mode = "input"
        else:
            mode = "requant"
        act = p.attrs.get("act", "NONE") if mode in ("linear", "rounding") else "NONE"
        if act == "RELU":
            lo = max(lo, 0)
        elif act == "RELU6":
            lo, hi = max(lo, 0), min(hi, int(np.floor(6.0 / s + f + 0.5)))
        if hi - lo > 255:
            raise ConversionError(f"Layer {q.name!r}: the {grid.kind} grid spans {hi - lo + 1} "
                                  "levels; int8 holds 256.")
        offset_ok = mode == "linear" and linear_only
        if abs(f) > 1e-6 and not offset_ok:
            note.append("offset rounded to the int8 grid (its consumers are not all conv/dense "
                        f"layers): values shift by {abs(f):.3f} of a step")
            f = 0.0
        stored, clamp_lo = s, None
        if hi - lo == 255:
            zp, fused = -128 - lo, "NONE"
        elif lo == 0 and mode in ("linear", "rounding") and p.kind != "mean":
            zp, fused = 127 - hi, "RELU"
        elif mode == "linear" and linear_only:
            n = max(-lo, hi)
            zp = 127 - hi if -lo >= hi else -128 - lo
            fused, stored = "RELU_N1_TO_1", 1.0 / n
        else:
            zp, fused = 127 - hi, "NONE"
            clamp_lo = zp + lo if zp + lo > -128 else None
        if mode in ("linear", "rounding"):
            p.attrs["act"] = fused
            if mode == "linear" and f:
                p.attrs["bias_shift"] = p.attrs.get("bias_shift", 0.0) + s * f
        target = root if mode != "requant" else vq
        for w in [target] + [op.outputs[0] for op in chain]:
            w.scale, w.zero_point, w.stored_scale = s, int(zp), stored
            w.offset, w.grid, w.fixed = -s * f, grid, True
        if mode == "requant":
            vq.ref = v.ref
            g.add("requant", [v], [vq], q.layer)
            note.append("requantized from a shared int8 tensor (double rounding)")
            end = vq
        else:
            end = chain[-1].outputs[0] if chain else root
            g.replace_uses(vq, end)
        if mode == "input":
            note.append("rounded by the input quantization")
        if clamp_lo is not None:
            lowered = g.value(end.name + "/clamp", end.shape)
            lowered.scale, lowered.zero_point, lowered.stored_scale = s, int(zp), stored
            lowered.offset, lowered.grid, lowered.fixed = -s * f, grid, True
            g.replace_uses(end, lowered)
            g.add("clamp", [end], [lowered], q.layer, lo=clamp_lo, hi=None)
        # the tensor that holds the rounded values (an explicit lower clamp may follow it)
        g.grid_tensors.append((target, grid, f, q.name, q.attrs["role"], (lo, hi)))
        notes[(q.name, q.attrs["role"])] = {
            "fold": {"linear": f"folded into {p.name if p else 'input'} ({fused})",
                     "rounding": f"folded into {p.name if p else ''} ({fused})",
                     "input": "on the model input", "requant": "requantize op"}[mode]
            + (" + MAXIMUM" if clamp_lo is not None else ""),
            "exact": mode in ("linear", "rounding") and not note,
            "notes": note,
        }
        g.toposort()
    return notes


def _propagate(g):
    """Parameters of pass-through / fixed-rule outputs from their inputs (topological)."""
    for op in g.ops:
        out = op.outputs[0]
        if out.scale is not None:
            continue
        src = op.inputs[0]
        if op.kind in _PASS + ("avgpool", "clamp"):
            out.scale, out.zero_point, out.stored_scale = src.scale, src.zero_point, src.stored_scale
            out.offset = src.offset
        elif op.kind == "softmax" and out.dtype == "int8":
            out.scale = out.stored_scale = 1.0 / 256
            out.zero_point = -128


# ------------------------------------------------------------------------- public API
def check_plan(model, plan):
    """Raise ConversionError naming the layer when a bit plan does not match ``model``."""
    from tfcompress.inspection import layer_precisions

    layers = {la.name: la for la in iter_layers(model)}
    bits = getattr(plan, "bits", None)
    if not isinstance(bits, dict) or not bits:
        raise ConversionError(f"plan must be a tfcompress.mixed_precision.BitPlan, got {plan!r}.")
    for name, b in bits.items():
        if name not in layers:
            raise ConversionError(f"The {plan.method} plan names layer {name!r}, which the model "
                                  f"{model.name!r} does not have.")
        p = layer_precisions(layers[name])
        kernel = p.get("kernel", p.get("depthwise_kernel"))
        if kernel is None:
            raise ConversionError(
                f"Layer {name!r}: the {plan.method} plan gives it {b} bits but its kernel is not "
                "quantized; apply the plan first (tfcompress.mixed_precision.apply(model, plan)).")
        if kernel != b:
            raise ConversionError(f"Layer {name!r}: the {plan.method} plan says {b} bits but the "
                                  f"model's kernel quantizer has {kernel}.")
    planned = set(bits)
    for name, layer in layers.items():
        p = layer_precisions(layer)
        k = p.get("kernel", p.get("depthwise_kernel"))
        if k is not None and k < 32 and name not in planned:
            raise ConversionError(f"Layer {name!r} has a {k}-bit kernel but is not in the "
                                  f"{plan.method} plan (a plan made for another model?).")


def export(model, *, target, representative_data, calibration_steps=500, io_type="int8",
           allow_low_bit=False, plan=None, pack=True, compute="int8"):
    """Write the exact-grid int8 flatbuffer of ``model`` (see the module docstring).

    Args:
        model: a built tf_keras functional or Sequential model.
        target: ``"int8"``, ``"micro"`` or ``"edgetpu"`` (decides which packed storage is used).
        representative_data: calibration inputs for tensors no quantizer governs.
        calibration_steps: examples used for calibration.
        io_type: ``"int8"``, ``"uint8"`` or ``"float32"`` model inputs/outputs.
        allow_low_bit: store a <= 4-bit kernel as int8 where the runtime cannot run it packed
            (otherwise an error names those layers).
        plan: optional :class:`~tfcompress.mixed_precision.BitPlan` the model was built from;
            checked against the model and shown in the report.
        pack: ``True`` packs <= 4-bit kernels where the runtime runs them exactly, ``"always"``
            wherever it runs them, ``False`` never (see the module docstring).
        compute: ``"int8"`` or ``"16x8"`` (int8/micro: every quantized linear op in 16x8 with
            its input grid spread over int16; kernels stay int8).

    Returns:
        ``(flatbuffer bytes, extras)`` where ``extras["layers"]`` holds one row per quantized
        role / kernel: ``trained_bits``, ``stored_bits``, ``compute_bits``, storage, exactness.
    """
    if target not in I4.PACKED_SUPPORT:
        raise ConversionError(f"The exact-grid exporter writes int8, micro and edgetpu files, "
                              f"not {target!r}.")
    if plan is not None:
        check_plan(model, plan)
    g = lower(model)
    remove_identities(g)
    fold_batchnorm(g)
    fuse_activations(g)
    notes = _fold_grids(g)
    arrays = _calibration_arrays(representative_data, model, calibration_steps)
    _calibrate(g, model, arrays)
    if io_type == "float32" and target in ("int8", "micro"):
        int16_head(g)
    if target in ("int8", "micro"):
        int16_before_average(g)
    _propagate(g)
    missing = [v.name for v in _all_values(g) if v.scale is None]
    if missing:
        raise ConversionError(f"No int8 parameters for tensors {missing[:5]} (internal error).")
    if compute == "16x8":
        pack = False            # TFLite's 16x8 kernels take int8 filters only
    emitter = _Emitter(g, target, io_type, allow_low_bit, pack, int16=compute == "16x8")
    flatbuffer = emitter.run()
    rows = _report_rows(g, notes, plan)
    grids = []
    for v, grid, f, layer, role, (lo, hi) in g.grid_tensors:
        ref = v.ref[1] if isinstance(v.ref, tuple) and v.ref[0] == "pooled" else v.ref
        source = getattr(getattr(ref, "_keras_history", None), "layer", None)
        grids.append({"layer": layer, "role": role, "quantizer": grid.kind,
                      "tensor_index": emitter.idx.get(id(v)), "tensor": v.name,
                      "keras_source": getattr(source, "name", None),
                      "scale": v.scale, "zero_point": v.zero_point, "fraction": f,
                      "lo": int(lo), "hi": int(hi)})
    return flatbuffer, {"layers": rows, "exporter": "tfcompress exact-grid int8",
                        "layers_table": format_layers(rows), "grids": grids}


def grid_agreement(result, x):
    """Per trained activation grid: the share of elements whose integer in the file equals
    the Keras quantizer's integer, over the examples ``x`` (LiteRT reference kernels).

    Args:
        result: a :class:`~tfcompress.conversion.ConversionResult` from the exact-grid exporter.
        x: inputs (first axis = examples).

    Returns:
        list of dicts (``layer``, ``role``, ``quantizer``, ``agreement``, ``max_steps``).
    """
    from ai_edge_litert.interpreter import Interpreter as LiteRT, OpResolverType

    from tfcompress.runtime.interpreter import Interpreter

    grids = [gr for gr in result.extras.get("grids", []) if gr["keras_source"]]
    if "grids" not in result.extras:
        raise ValueError("grid_agreement needs a file written by the exact-grid exporter.")
    model = result.model
    if not grids:
        return []
    refs = [model.get_layer(gr["keras_source"]).output for gr in grids]
    probe = keras.Model(model.inputs, refs)
    xs = x if isinstance(x, (list, tuple)) else [x]
    ref_out = probe.predict(xs if len(xs) > 1 else xs[0], batch_size=128, verbose=0)
    ref_out = ref_out if isinstance(ref_out, list) else [ref_out]
    wrapper = Interpreter(result.flatbuffer, runtime="litert")
    it = LiteRT(model_content=result.flatbuffer, experimental_preserve_all_tensors=True,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inputs = [d["index"] for d in it.get_input_details()]
    same = [0] * len(grids)
    worst = [0] * len(grids)
    total = [0] * len(grids)
    for i in range(len(xs[0])):
        for idx, a in zip(inputs, wrapper.prepare([a[i: i + 1] for a in xs])):
            it.set_tensor(idx, a)
        it.invoke()
        for k, (gr, r) in enumerate(zip(grids, ref_out)):
            q = np.clip(it.get_tensor(gr["tensor_index"]).astype(np.int64) - gr["zero_point"],
                        gr["lo"], gr["hi"])
            j = np.clip(np.round(r[i: i + 1].astype(np.float64) / gr["scale"] + gr["fraction"]),
                        gr["lo"], gr["hi"]).reshape(q.shape)
            diff = np.abs(q - j)
            same[k] += int(np.sum(diff == 0))
            worst[k] = max(worst[k], int(diff.max()))
            total[k] += diff.size
    return [{"layer": gr["layer"], "role": gr["role"], "quantizer": gr["quantizer"],
             "agreement": s / t, "max_steps": w} for gr, s, t, w in zip(grids, same, total, worst)]


def _report_rows(g, notes, plan):
    planned = plan.bits if plan is not None else {}
    rows = []
    for r in g.layer_rows:
        row = dict(r)
        row.setdefault("notes", [])
        if row["role"] in ("input", "output"):
            info = notes.get((row["layer"], row["role"]), {})
            row.update(stored_bits=8, compute_bits=8, storage="int8 tensor",
                       exact=info.get("exact", False), fold=info.get("fold"))
            row["notes"] = row["notes"] + info.get("notes", [])
        elif row["role"] == "average":
            row.update(exact=True, notes=row["notes"] + [
                "global average as a depthwise convolution (weights 1/N held exactly)"])
        else:
            row["exact"] = row.get("quantizer") != "float"
            if row.get("quantizer") == "float":
                row["notes"] = row["notes"] + ["float weights: 8-bit post-training quantization"]
        if row["layer"] in planned and row["role"] != "input":
            row["planned_bits"] = planned[row["layer"]]
        rows.append(row)
    return rows


def format_layers(rows):
    """A text table of the per-layer bits (what ``ConversionResult.report()`` carries)."""
    head = f"{'layer':24s} {'role':16s} {'quantizer':28s} {'trained':>7s} {'stored':>6s} " \
           f"{'compute':>7s} {'exact':>5s}  notes"
    lines = [head, "-" * len(head)]
    for r in rows:
        trained = "float" if r.get("trained_bits", 32) == 32 else str(r["trained_bits"])
        planned = f" (plan {r['planned_bits']})" if "planned_bits" in r else ""
        lines.append(f"{r['layer'][:24]:24s} {r['role'][:16]:16s} {str(r.get('quantizer'))[:28]:28s} "
                     f"{trained + planned:>7s} {r.get('stored_bits', '-')!s:>6s} "
                     f"{r.get('compute_bits', '-')!s:>7s} {'yes' if r.get('exact') else 'no':>5s}  "
                     + "; ".join(r.get("notes", [])))
    return "\n".join(lines)


__all__ = ["check_plan", "export", "format_layers", "grid_agreement", "has_quantizers"]
