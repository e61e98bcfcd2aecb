"""Edge TPU pre-check: which operators of a full-int8 model the Edge TPU compiler can map.

The rules follow Coral's published "supported operations" table and compatibility notes
(https://coral.ai/docs/edgetpu/models-intro/): every tensor 8-bit quantized with a static
shape; at most 3 innermost dimensions larger than 1; the listed ops with their limitations.
The compiler makes one partition, so the first operator it cannot map, and every operator
after it, run on the CPU. This is a pre-check, not the compiler: if ``edgetpu_compiler`` is
on ``PATH`` it is run as well and its log is attached, and its verdict is the final one.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

# op -> limitation checked below (None: no extra limitation known to the pre-check).
SUPPORTED = {
    "ADD": None, "SUB": None, "MUL": None, "MAXIMUM": None, "MINIMUM": None,
    "AVERAGE_POOL_2D": "no_fused_activation", "MAX_POOL_2D": "no_fused_activation",
    "CONCATENATION": "no_fused_activation", "CONV_2D": None, "DEPTHWISE_CONV_2D": None,
    "TRANSPOSE_CONV": None, "FULLY_CONNECTED": "one_dimensional_output", "L2_NORMALIZATION": None,
    "LOGISTIC": None, "TANH": None, "RELU": None, "RELU6": None, "RELU_N1_TO_1": None,
    "PRELU": None, "MEAN": "no_batch_reduction", "SUM": "no_batch_reduction",
    "REDUCE_MAX": "no_batch_reduction", "REDUCE_MIN": "no_batch_reduction", "PAD": None,
    "PACK": None, "RESHAPE": None, "EXPAND_DIMS": None, "SQUEEZE": None, "SLICE": None,
    "STRIDED_SLICE": None, "SPLIT": None, "SPACE_TO_DEPTH": None, "TRANSPOSE": None,
    "RESIZE_BILINEAR": None, "RESIZE_NEAREST_NEIGHBOR": None, "SOFTMAX": "softmax_size",
    "QUANTIZE": None, "DEQUANTIZE": None, "RSQRT": None, "SQUARED_DIFFERENCE": None,
    "LSTM": None, "UNIDIRECTIONAL_SEQUENCE_LSTM": None,
}
_INT8 = ("int8", "uint8")


def _rank_ok(shape):
    dims = [d for d in shape]
    return len(dims) <= 3 or all(d == 1 for d in dims[:-3])


def check_operator(op):
    """``None`` if the Edge TPU can map ``op`` (a FlatbufferInfo operator dict), else why not."""
    name = op["op"]
    if name not in SUPPORTED:
        return f"{name} is not in the Edge TPU's supported operations"
    tensors = [t for t in op["inputs"] + op["outputs"] if not (t["constant"] and t["dtype"] == "int32")]
    for t in tensors:
        if t["dtype"] not in _INT8 and not (name in ("QUANTIZE", "DEQUANTIZE") and t["dtype"] == "float32"):
            return f"tensor {t['name']!r} is {t['dtype']}; the Edge TPU runs 8-bit quantized tensors only"
        if not t["constant"] and not _rank_ok(t["shape"]):
            return (f"tensor {t['name']!r} has shape {t['shape']}; only the 3 innermost "
                    "dimensions may be larger than 1")
    rule = SUPPORTED[name]
    if rule == "no_fused_activation" and op["fused_activation"] not in (None, "NONE"):
        return f"{name} with a fused {op['fused_activation']} activation is not supported"
    if rule == "one_dimensional_output":
        shape = op["outputs"][0]["shape"]
        if len([d for d in shape if d != 1]) > 1:
            return f"FULLY_CONNECTED output {shape} is not one-dimensional"
    if rule == "softmax_size":
        shape = op["inputs"][0]["shape"]
        if int(np.prod(shape)) > 16000 or len([d for d in shape if d != 1]) > 1:
            return f"SOFTMAX input {shape}: only 1-D inputs of at most 16,000 elements are supported"
    if rule == "no_batch_reduction" and len(op["inputs"]) > 1:
        axes = op["inputs"][1]
        if axes["constant"] and axes["shape"] and 0 in axes.get("values", ()):
            return f"{name} over the batch dimension is not supported"
    return None


def compatibility_report(info):
    """Per-operator verdicts and where the graph would split, from a FlatbufferInfo."""
    rows = []
    split_at = None
    for i, op in enumerate(info.operators):
        reason = check_operator(op)
        if reason is not None and split_at is None:
            split_at = i
        if split_at is None:
            status = "mapped to Edge TPU"
        elif reason is not None:
            status = f"CPU: {reason}"
        else:
            status = "CPU: after the first unsupported operator (one partition only)"
        rows.append({"index": i, "op": op["op"], "status": status, "on_edgetpu": split_at is None})
    mapped = sum(r["on_edgetpu"] for r in rows)
    return {
        "operators": rows, "mapped": mapped, "total": len(rows),
        "split_at": split_at,
        "split_op": None if split_at is None else rows[split_at]["op"],
        "fully_mapped": split_at is None,
    }


def format_report(report):
    lines = [f"Edge TPU pre-check: {report['mapped']}/{report['total']} operators mapped"
             + ("" if report["fully_mapped"] else
                f"; the graph splits at operator {report['split_at']} ({report['split_op']})")]
    lines += [f"  {r['index']:3d} {r['op']:24s} {r['status']}" for r in report["operators"]]
    return "\n".join(lines)


def run_compiler(flatbuffer, compiler="edgetpu_compiler"):
    """Run ``edgetpu_compiler`` if installed; return its log text (or ``None`` if absent)."""
    exe = shutil.which(compiler)
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(flatbuffer)
        proc = subprocess.run([exe, "-s", "-o", tmp, str(path)], capture_output=True, text=True,
                              timeout=600)
        return proc.stdout + proc.stderr


def attach_edgetpu(result):
    report = compatibility_report(result.info)
    report["compiler_log"] = run_compiler(result.flatbuffer)
    report["text"] = format_report(report)
    result.extras["edgetpu"] = report
