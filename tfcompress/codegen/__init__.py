"""Ahead-of-time C generation for microcontrollers from a converted ``.tflite`` flatbuffer.

``generate(flatbuffer, "out/", cpu="cortex-m4")`` (or ``ConversionResult.to_c``) writes a
self-contained C99 library: the graph as straight-line kernel calls, weights as ``const``
arrays (flash), one static arena whose offsets are planned offline from tensor lifetimes
(with in-place element-wise ops and row streaming of large activations), and plain-C kernels:
float32, int8 with TFLite's bit-exact quantization rules (optionally through Arm CMSIS-NN) and
Larq Compute Engine's binary ops (bit-packed convolution, max-pool, (de)quantization) written
for Cortex-M cores without a popcount instruction. No heap, no OS, no C++, nothing from libc
beyond ``memcpy``/``memset``.

Python::

    result = tfcompress.convert(bnn, target="lce")          # or an int8 / float32 result
    lib = result.to_c("bnn_c/", cpu="cortex-m4")            # a CLibrary
    print(lib.flash_bytes, lib.ram_bytes)                   # from the compiled objects
    print(lib.verify(x_test, y_test))                       # host build vs the interpreter
    res = lib.run_qemu(x_test[:100])                        # emulated Cortex-M4 (QEMU)

C (``bnn_c/model.h``)::

    float in[MODEL_INPUT_SIZE], out[MODEL_OUTPUT_SIZE];
    int rc = tfc_model_invoke(in, out);          /* 0 on success */

Build: compile ``model.c`` and the ``tfc_*.c`` files of the folder with any C99 compiler
(``-std=c99``; keep the default ``-ffp-contract=off`` of ISO C so float results match the
host bit for bit). For int8 layers through CMSIS-NN add ``-DTFC_USE_CMSIS_NN``, CMSIS-NN's
``Include/`` and its int8 sources (the results are the same bytes).

Modules: :mod:`.graph` (flatbuffer reader), :mod:`.quant` (integer parameters as TFLite
computes them), :mod:`.ops_builtin` / :mod:`.ops_lce` (lowering), :mod:`.planner` (arena),
:mod:`.emit` (C text), :mod:`.build` (host builds), :mod:`.reference` (reference
interpreters on raw inputs), :mod:`.cortexm` (cross builds, sizes, QEMU), :mod:`.library`
(:func:`generate`, :class:`CLibrary`).
"""

from tfcompress.codegen.emit import SUPPORTED_OPS
from tfcompress.codegen.graph import CodegenError, read_graph
from tfcompress.codegen.library import CPUS, CLibrary, VerifyReport, generate

__all__ = ["CPUS", "CLibrary", "CodegenError", "SUPPORTED_OPS", "VerifyReport", "generate",
           "read_graph"]
