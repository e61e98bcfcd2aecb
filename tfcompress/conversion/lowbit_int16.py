"""The exact-grid exporter's int16 (16x8) placements: where an int8 tensor would round a
value the Keras model keeps finer, the tensor is int16 instead (int8 weights, int16
activations, int64 bias; TFLite's 16x8 kernels in LiteRT and TFLite Micro).

- :func:`int16_head`: with float I/O, the classifier's last Dense and Softmax.
- :func:`int16_before_average`: a tensor no quantizer governs between a convolution and a
  global average whose output is on a trained grid.
"""


def int16_head(g):
    """With float I/O, run a classifier's last Dense and its Softmax in 16x8 (int16
    activations, int8 weights): an int8 softmax holds probabilities in steps of 1/256, so two
    classes closer than that tie in the file while Keras still orders them. Returns the names
    of the layers moved to int16."""
    moved = []
    for out in g.outputs:
        sm = out.producer
        if sm is None or sm.kind != "softmax" or len(out.consumers):
            continue
        logits = sm.inputs[0]
        fc = logits.producer
        if fc is None or fc.kind != "fc" or len(logits.consumers) != 1 or logits.grid is not None \
                or logits.range is None or fc.attrs["act"] != "NONE":
            continue
        top = max(abs(logits.range[0]), abs(logits.range[1]), 1e-12)
        logits.dtype, out.dtype = "int16", "int16"
        logits.scale = logits.stored_scale = top / 32767.0
        logits.zero_point = 0
        out.scale = out.stored_scale = 1.0 / 32768
        out.zero_point = 0
        fc.attrs["row"].setdefault("notes", []).append(
            "16x8 head: int16 logits and softmax (float I/O), so near-ties stay ordered")
        fc.attrs["row"]["compute_bits"] = "8x16"
        moved.append(fc.name)
    return moved


def int16_before_average(g):
    """A tensor no quantizer governs (calibrated, 8-bit in a plain int8 file) between a
    convolution or dense layer and a global average whose output is on a trained grid: kept in
    int16 (the producer runs in 16x8, the average reads int16), so the one rounding onto the
    grid sees the exact sum instead of N values each already rounded to 1/255 of the
    calibrated range (which lands the pooled value up to several grid levels off)."""
    moved = []
    for op in g.ops:
        if op.kind != "dwconv" or not op.attrs.get("pool"):
            continue
        x, pooled = op.inputs[0], op.outputs[0]
        p = x.producer
        out = pooled.consumers[0].outputs[0] if (pooled.grid is None and len(pooled.consumers) == 1
                                                 and pooled.consumers[0].kind == "reshape") \
            else pooled
        if (p is None or p.kind not in ("conv", "dwconv", "fc") or x.grid is not None
                or x.dtype != "int8" or len(x.consumers) != 1 or x.range is None
                or out.grid is None or x.offset or p.inputs[0].offset):
            # (an LSQ+ input offset: TFLite Micro's 16x8 path then parts from LiteRT's
            # [measured: max |diff| 0.038 vs 0.008], so such producers stay int8)
            continue
        top = max(abs(x.range[0]), abs(x.range[1]), 1e-12)
        x.dtype, x.zero_point = "int16", 0
        x.scale = x.stored_scale = top / 32767.0
        p.attrs["row"].setdefault("notes", []).append(
            "16x8: its output (no quantizer in Keras) stays int16 into the global average, "
            "which rounds once onto the next grid")
        p.attrs["row"]["compute_bits"] = "8x16"
        moved.append(p.name)
    return moved


__all__ = ["int16_before_average", "int16_head"]
