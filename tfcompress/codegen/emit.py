"""Graph -> steps -> C text: ``<name>.h`` (entry points, sizes) and ``<name>.c`` (constants in
flash, one static arena, the graph as straight-line kernel calls)."""

import numpy as np

from tfcompress.codegen.graph import CodegenError
from tfcompress.codegen.ops_builtin import LOWER as LOWER_BUILTIN
from tfcompress.codegen.ops_lce import LOWER as LOWER_LCE
from tfcompress.codegen.planner import Chain
from tfcompress.codegen.steps import CTYPES, Context, c_float

LOWER = {**LOWER_BUILTIN, **LOWER_LCE}
SUPPORTED_OPS = tuple(sorted(LOWER))


def fold_constants(graph):
    """Evaluate DEQUANTIZE of constant tensors (float16 or int8 weights) at generation time."""
    keep = []
    for node in graph.nodes:
        src_const = node.inputs and graph.tensors[node.inputs[0]].data is not None
        if node.op == "DEQUANTIZE" and src_const:
            src, dst = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
            data = src.data.astype(np.float32)
            if src.dtype in ("int8", "uint8", "int16") and src.scale.size:
                axis = src.quantized_dimension
                shape = [1] * data.ndim
                if src.scale.size > 1:
                    shape[axis] = src.scale.size
                data = ((data - src.zero_point.reshape(shape).astype(np.float32))
                        * src.scale.reshape(shape)).astype(np.float32)
            dst.data = data.reshape(dst.shape).astype(np.float32)
            continue
        keep.append(node)
    graph.nodes = keep
    return graph


def check_supported(graph):
    """Raise :class:`CodegenError` naming every operator C generation cannot handle."""
    bad = [n for n in graph.nodes if n.op not in LOWER]
    if bad:
        names = "; ".join(f"{n.describe()} writing {graph.tensors[n.outputs[0]].name!r}"
                          if n.outputs else n.describe() for n in bad)
        raise CodegenError(f"Unsupported operator(s) for C generation: {names}. Supported: "
                           f"{', '.join(SUPPORTED_OPS)}.")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise CodegenError(f"C generation handles models with one input and one output; this "
                           f"model has {len(graph.inputs)} inputs and {len(graph.outputs)} "
                           "outputs.")
    for t in (graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]):
        if t.dtype not in ("float32", "int8"):
            raise CodegenError(f"Model input/output {t.name!r} has type {t.dtype}; generated C "
                               "takes float32 or int8 I/O.")


def lower(graph, ctx):
    steps = []
    for node in graph.nodes:
        steps.append(LOWER[node.op](ctx, node))
    return steps


def _ptr_type(tensor):
    return "uint32_t" if tensor.dtype == "int32" else CTYPES[tensor.dtype]


class _Buffers(dict):
    """tensor index -> C pointer expression."""


def _buffer_exprs(graph, plan_, arena):
    exprs = _Buffers()
    user = plan_.user_input
    user_root = plan_.tensor_buffer.get(user) if user is not None else None
    for t, b in plan_.tensor_buffer.items():
        exprs[t] = f"(({_ptr_type(graph.tensors[t])} *)({arena} + {b.offset}))"
    if user is not None:
        # the user's input and its aliases (a RESHAPE of the input) read the caller's memory
        for t in range(len(graph.tensors)):
            if t not in plan_.tensor_buffer and graph.tensors[t].data is None:
                exprs.setdefault(t, f"(({_ptr_type(graph.tensors[t])} *)tfc_in)")
        exprs[user] = "tfc_in"
    del user_root
    return exprs


def _emit_schedule(graph, plan_, exprs, lines):
    for pos, item in enumerate(plan_.schedule):
        if pos:
            lines.append(f"  TFC_PROFILE_MARK({pos - 1});")
        scratch = plan_.scratch.get(pos)
        sexpr = f"(void *)({exprs['arena']} + {scratch.offset})" if scratch else None
        if not isinstance(item, Chain):
            if item.alias and exprs.get(item.ins[0]) == exprs.get(item.outs[0]):
                lines.append(f"  /* {item.label}: in place */")
                continue
            lines.append(f"  /* {item.label} */")
            lines += ["  " + ln for ln in item.emit(exprs, None, sexpr)]
            continue
        steps = item.steps
        last = graph.tensors[steps[-1].outs[0]]
        k = len(steps)
        lines.append("  /* streamed rows: " + " -> ".join(s.label for s in steps) + " */")
        lines.append(f"  for (tfc_r = 0; tfc_r < {last.shape[1]}; ++tfc_r) {{")
        lines.append(f"    const int lo{k - 1} = tfc_r, hi{k - 1} = tfc_r + 1;")
        for i in range(k - 1, 0, -1):
            s = steps[i]
            if s.elementwise:
                lines.append(f"    const int lo{i - 1} = lo{i}, hi{i - 1} = hi{i};")
            else:
                g = s.rows
                lines.append(
                    f"    const int lo{i - 1} = TFC_MAX(0, lo{i} * {g.stride} - {g.pad}), "
                    f"hi{i - 1} = TFC_MIN({g.in_h}, (hi{i} - 1) * {g.stride} - {g.pad} + "
                    f"{(g.k - 1) * g.dil + 1});")
        for i, s in enumerate(steps):
            rows = (f"lo{i}", f"hi{i}", "0" if i == 0 else f"lo{i - 1}",
                    f"lo{i}" if i < k - 1 else "0")
            lines += ["    " + ln for ln in s.emit(exprs, rows, sexpr)]
        lines.append("  }")


def write_c(graph, steps, plan_, ctx, name, *, cpu="host"):
    """Return ``(source, header)`` for the planned model."""
    up = name.upper()
    inp, out = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    arena = f"tfc_{name}_arena.b"
    exprs = _buffer_exprs(graph, plan_, arena)
    exprs["arena"] = arena
    decls = []
    banded = {id(s) for item in plan_.schedule if isinstance(item, Chain) for s in item.steps}
    for s in steps:
        decls += [d for d in s.decls if d]
        decls += [d for d in (s.row_decls if id(s) in banded else s.full_decls) if d]
    body = []
    _emit_schedule(graph, plan_, exprs, body)
    in_expr = exprs.get(inp.index)
    out_expr = exprs[out.index]
    arena_bytes = max(plan_.arena_bytes, 8)
    kernels = sorted(set().union(*(s.kernels for s in steps)) | {"float"})

    desc = graph.description or "model"
    h = [f"/* Generated by tfcompress (tfcompress.codegen) for {cpu}: {desc}.",
         " * C99, no heap: one static arena, weights as const data. Entry points return 0 on",
         " * success (a negative value if a CMSIS-NN call failed). */",
         f"#ifndef TFC_{up}_H_", f"#define TFC_{up}_H_", "", "#include <stdint.h>", "",
         f"#define {up}_INPUT_SIZE {inp.size}     /* elements, shape {list(inp.shape)} */",
         f"#define {up}_OUTPUT_SIZE {out.size}    /* elements, shape {list(out.shape)} */",
         f"#define {up}_INPUT_BYTES {inp.nbytes}",
         f"#define {up}_OUTPUT_BYTES {out.nbytes}",
         f"#define {up}_ARENA_BYTES {arena_bytes}",
         f"#define {up}_INPUT_IS_INT8 {int(inp.dtype == 'int8')}",
         f"#define {up}_OUTPUT_IS_INT8 {int(out.dtype == 'int8')}"]
    if inp.dtype == "int8":
        h += [f"#define {up}_INPUT_SCALE {c_float(inp.qscale)}",
              f"#define {up}_INPUT_ZERO_POINT {inp.qzero}"]
    if out.dtype == "int8":
        h += [f"#define {up}_OUTPUT_SCALE {c_float(out.qscale)}",
              f"#define {up}_OUTPUT_ZERO_POINT {out.qzero}"]
    h += ["", "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
          "/* float input/output; int8 models quantize the input (round half away from zero) and",
          " * dequantize the output with the scales above */",
          f"int tfc_{name}_invoke(const float *input, float *output);",
          "/* input/output in the model's own types (int8_t or float) */",
          f"int tfc_{name}_invoke_raw(const void *input, void *output);",
          "", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* TFC_{up}_H_ */", ""]

    c = [f'/* Generated by tfcompress for {cpu}. Do not edit: regenerate from the .tflite file. */',
         f'#include "{name}.h"', '#include "tfc_kernels.h"', "",
         "#define TFC_MAX(a, b) ((a) > (b) ? (a) : (b))",
         "#define TFC_MIN(a, b) ((a) < (b) ? (a) : (b))",
         "#define TFC_CHECK(x) do { const int tfc_rc_ = (x); if (tfc_rc_) return tfc_rc_; } while (0)",
         "#ifndef TFC_PROFILE_MARK /* define it to time each step (e.g. the QEMU runner) */",
         "#define TFC_PROFILE_MARK(step) ((void)0)", "#endif",
         "", f"/* kernels used: {', '.join(kernels)}; constants: {ctx.const_bytes} bytes */", ""]
    c += decls
    c += ["", f"/* One arena of {arena_bytes} bytes, offsets planned from tensor lifetimes:"]
    for b in sorted(plan_.buffers, key=lambda x: x.offset):
        what = ("scratch" if b.key[0] == "scratch" else
                ", ".join(graph.tensors[t].name for t in b.tensors)[:80])
        c.append(f" *   [{b.offset:7d}, {b.offset + b.size:7d}) steps {b.start}..{b.end}: {what}")
    c += [" */", f"static union {{ uint64_t align; unsigned char b[{arena_bytes}]; }} tfc_{name}_arena;", ""]
    c += [f"static int tfc_{name}_run(const float *tfc_in) {{",
          "  int tfc_y = 0, tfc_r = 0;", "  (void)tfc_in;", "  (void)tfc_y;", "  (void)tfc_r;"]
    c += body
    c += [f"  TFC_PROFILE_MARK({len(plan_.schedule) - 1});", "  return 0;", "}", ""]
    # entry points
    c += [f"int tfc_{name}_invoke(const float *input, float *output) {{"]
    if plan_.user_input is not None:
        c += [f"  TFC_CHECK(tfc_{name}_run(input));"]
    else:
        if inp.dtype == "int8":
            c += [f"  tfc_quantize_f32_s8(input, {in_expr}, {inp.size}, {c_float(inp.qscale)}, {inp.qzero});"]
        else:
            c += [f"  memcpy({in_expr}, input, {inp.nbytes});"]
        c += [f"  TFC_CHECK(tfc_{name}_run(0));"]
    if out.dtype == "int8":
        c += [f"  tfc_dequantize_s8_f32({out_expr}, output, {out.size}, {c_float(out.qscale)}, {out.qzero});"]
    else:
        c += [f"  memcpy(output, {out_expr}, {out.nbytes});"]
    c += ["  return 0;", "}", ""]
    c += [f"int tfc_{name}_invoke_raw(const void *input, void *output) {{"]
    if plan_.user_input is not None:
        c += [f"  TFC_CHECK(tfc_{name}_run((const float *)input));"]
    else:
        c += [f"  memcpy({in_expr}, input, {inp.nbytes});", f"  TFC_CHECK(tfc_{name}_run(0));"]
    c += [f"  memcpy(output, {out_expr}, {out.nbytes});", "  return 0;", "}", ""]
    return "\n".join(c), "\n".join(h), kernels


__all__ = ["LOWER", "SUPPORTED_OPS", "check_supported", "fold_constants", "lower", "write_c",
           "Context"]
