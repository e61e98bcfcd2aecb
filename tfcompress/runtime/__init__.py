"""Running converted models: the interpreter front end and flatbuffer inspection."""

from tfcompress.runtime.flatbuffer import FlatbufferInfo, inspect_flatbuffer
from tfcompress.runtime.interpreter import LCE_KERNELS, RUNTIMES, Interpreter, dequantize, quantize

__all__ = ["FlatbufferInfo", "Interpreter", "LCE_KERNELS", "RUNTIMES", "dequantize",
           "inspect_flatbuffer", "quantize"]
