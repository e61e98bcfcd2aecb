"""Running converted models: the interpreter front end and flatbuffer inspection."""

from tfcompress.runtime.flatbuffer import FlatbufferInfo, inspect_flatbuffer
from tfcompress.runtime.interpreter import (
    LCE_KERNELS, RUNTIMES, Interpreter, auto_runtime, dequantize, latency_interleaved, quantize,
)
from tfcompress.runtime.profile import ModelProfile, NodeTime, profile  # noqa: E402

__all__ = ["FlatbufferInfo", "Interpreter", "LCE_KERNELS", "RUNTIMES", "auto_runtime",
           "dequantize", "inspect_flatbuffer", "latency_interleaved", "quantize",
           "ModelProfile", "NodeTime", "profile"]
