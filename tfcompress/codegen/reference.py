"""Reference runs of a flatbuffer on raw (already quantized) inputs, for bit-exact comparisons.

- builtin-only files: ai-edge-litert with its *reference* kernels
  (``OpResolverType.BUILTIN_REF``), the semantics TFLite Micro and CMSIS-NN also implement
  (``BUILTIN`` would use optimized kernels and XNNPACK, whose int8 rounding differs);
- files with ``Lce*`` ops: Larq Compute Engine's interpreter (its reference bconv kernel by
  default, the only one that supports every attribute combination, e.g. int8 output with zero
  padding).
"""

import numpy as np


def quantize_input(x, scale, zero_point):
    """float -> int8 exactly as the generated ``tfc_quantize_f32_s8`` (float32 division, round
    half away from zero, saturate)."""
    v = (np.asarray(x, np.float32) / np.float32(scale)).astype(np.float64)
    r = np.where(v >= 0, np.floor(v + 0.5), -np.floor(-v + 0.5))
    r = np.clip(r, -(2 ** 31), 2 ** 31 - 1) + int(zero_point)
    return np.clip(r, -128, 127).astype(np.int8)


def dequantize_output(q, scale, zero_point):
    """int8 -> float as the generated code: ``scale * (q - zero_point)`` in float32."""
    return (np.float32(scale) * (np.asarray(q, np.int32) - int(zero_point)).astype(np.float32)).astype(np.float32)


class Reference:
    """Run a flatbuffer one example at a time on raw input arrays."""

    def __init__(self, flatbuffer, *, runtime=None, lce_kernel="reference"):
        from tfcompress.runtime.flatbuffer import inspect_flatbuffer

        self.flatbuffer = bytes(flatbuffer)
        info = inspect_flatbuffer(self.flatbuffer)
        lce = any(op.startswith("Lce") for op in info.custom_ops)
        self.runtime = runtime or ("lce" if lce else "litert")
        self.input = info.inputs[0]
        self.output = info.outputs[0]
        if self.runtime == "lce":
            from larq_compute_engine.tflite.python.interpreter import Interpreter as LCE

            self._it = LCE(self.flatbuffer, num_threads=1,
                           use_reference_bconv=lce_kernel == "reference",
                           use_indirect_bgemm=lce_kernel == "indirect_bgemm")
        elif self.runtime == "litert":
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            self._it = Interpreter(model_content=self.flatbuffer, num_threads=1,
                                   experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
            self._it.allocate_tensors()
            self._in = self._it.get_input_details()[0]["index"]
            self._out = self._it.get_output_details()[0]["index"]
        else:
            raise ValueError(f"runtime must be 'lce' or 'litert', got {self.runtime!r}.")

    def run_raw(self, x):
        """``x``: raw inputs (model dtype), first axis = examples. Returns raw outputs."""
        shape = tuple(self.input["shape"])
        x = np.asarray(x, dtype=self.input["dtype"]).reshape((-1,) + shape[1:])
        outs = []
        for i in range(len(x)):
            xi = x[i:i + 1]
            if self.runtime == "lce":
                outs.append(np.asarray(self._it.interpreter.predict([xi])[0]).reshape(-1))
            else:
                self._it.set_tensor(self._in, xi)
                self._it.invoke()
                outs.append(np.array(self._it.get_tensor(self._out)).reshape(-1))
        return np.stack(outs)


__all__ = ["Reference", "dequantize_output", "quantize_input"]
