"""The object ``tfcompress.convert`` returns."""

from dataclasses import dataclass, field
from pathlib import Path

from tfcompress.runtime.flatbuffer import FlatbufferInfo
from tfcompress.runtime.interpreter import Interpreter, auto_runtime
from tfcompress.runtime.verify import verify as _verify

_RUNTIME = {"lce": "lce", "micro": "micro"}


@dataclass(eq=False)
class ConversionResult:
    """A converted model: flatbuffer bytes plus what is known about them.

    Attributes:
        flatbuffer: the ``.tflite`` bytes.
        target: the target it was converted for.
        info: operators and I/O tensors (:class:`FlatbufferInfo`).
        model: the Keras model it came from (used by :meth:`verify` for agreement).
        extras: target-specific artefacts (``micro``: C source/header and arena size;
            ``edgetpu``: compatibility report).
    """

    flatbuffer: bytes
    target: str
    info: FlatbufferInfo
    model: object = None
    extras: dict = field(default_factory=dict)

    @property
    def size(self):
        return len(self.flatbuffer)

    @property
    def ops(self):
        return self.info.ops

    @property
    def custom_ops(self):
        return self.info.custom_ops

    @property
    def inputs(self):
        return self.info.inputs

    @property
    def outputs(self):
        return self.info.outputs

    @property
    def runtime(self):
        """The interpreter that runs this file by default (:meth:`verify`, :meth:`interpreter`):
        for LCE files the one ``runtime="auto"`` picks (``tfcompress`` when its kernels are
        built, else ``lce``), else ``micro`` or ``litert``."""
        if self.target == "lce":
            return auto_runtime(self.info)
        return _RUNTIME.get(self.target, "litert")

    def save(self, path):
        """Write the flatbuffer to ``path`` (and, for ``micro``, the C files beside it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.flatbuffer)
        for name, text in self.extras.get("files", {}).items():
            (path.parent / name).write_text(text)
        return path

    def interpreter(self, **options):
        """An :class:`~tfcompress.runtime.Interpreter` for this file in its runtime."""
        options.setdefault("runtime", "auto" if self.target == "lce" else self.runtime)
        return Interpreter(self.flatbuffer, **options)

    def verify(self, x, y=None, **options):
        """Run the file on ``x`` in its real interpreter; compare with the Keras model.

        See :func:`tfcompress.runtime.verify.verify` for the options and the report.
        """
        options.setdefault("runtime", "auto" if self.target == "lce" else self.runtime)
        options.setdefault("keras_model", self.model)
        return _verify(self.flatbuffer, x, y, **options)

    def to_c(self, out_dir, *, cpu="host", name="model", cmsis_nn=None, **options):
        """Generate a self-contained C99 library for microcontrollers in ``out_dir``.

        ``cpu``: ``"host"``, ``"cortex-m4"``, ``"cortex-m7"`` or ``"cortex-m33"``. Returns a
        :class:`tfcompress.codegen.CLibrary` (``.flash_bytes``, ``.ram_bytes``, ``.path``,
        ``.verify(x, y)``); see :func:`tfcompress.codegen.generate` for the other options.
        """
        from tfcompress.codegen import generate

        return generate(self.flatbuffer, out_dir, cpu=cpu, name=name, cmsis_nn=cmsis_nn, **options)

    def report(self):
        """A JSON-ready description (target, size, ops, I/O quantization, extras)."""
        rep = {
            "target": self.target, "size_bytes": self.size, "op_counts": self.info.op_counts,
            "custom_ops": self.custom_ops, "inputs": self.inputs, "outputs": self.outputs,
        }
        rep.update({k: v for k, v in self.extras.items() if k != "files"})
        return rep
