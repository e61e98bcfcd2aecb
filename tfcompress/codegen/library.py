"""``generate()``: a converted flatbuffer -> a folder of C99, and :class:`CLibrary`, the handle
to that folder (sizes from compiled objects, host verification, Cortex-M builds and QEMU runs)."""

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tfcompress.codegen import build
from tfcompress.codegen.emit import check_supported, fold_constants, lower, write_c
from tfcompress.codegen.graph import CodegenError, read_graph
from tfcompress.codegen.planner import check_plan, plan
from tfcompress.codegen.steps import Context

CPUS = ("host", "cortex-m4", "cortex-m7", "cortex-m33")
KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
KERNEL_FILES = {"float": "tfc_float.c", "int8": "tfc_int8.c", "binary": "tfc_binary.c"}


@dataclass
class VerifyReport:
    """Host build of the generated C against the reference interpreter on the same raw inputs.

    Attributes:
        examples: number of inputs compared.
        identical: fraction of examples whose raw outputs are bit-identical.
        max_abs_diff: largest |C - reference| over all (dequantized) outputs.
        max_rel_diff: ``max_abs_diff`` divided by the largest |reference output|.
        agreement: fraction of examples with the same argmax.
        accuracy / reference_accuracy: top-1 accuracy of each when labels are given.
        runtime: the reference interpreter (``litert`` reference kernels or ``lce``).
        cmsis_nn: whether the host build used CMSIS-NN.
    """

    examples: int
    identical: float
    max_abs_diff: float
    max_rel_diff: float
    agreement: float
    accuracy: float = None
    reference_accuracy: float = None
    runtime: str = ""
    cmsis_nn: bool = False

    def as_dict(self):
        return asdict(self)


def _check_name(name):
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
        raise ValueError(f"name must be a C identifier (letters, digits, _), got {name!r}.")
    if name.startswith("tfc_"):
        raise ValueError(f"name {name!r} would clash with the kernel files (tfc_*.c); pick "
                         "another name.")
    return name


def generate(flatbuffer, out_dir, *, cpu="host", name="model", cmsis_nn=None, stream="auto"):
    """Generate a self-contained C99 library for ``flatbuffer`` in ``out_dir``.

    The folder holds ``<name>.h`` (entry points ``tfc_<name>_invoke(const float *in, float
    *out)`` and ``tfc_<name>_invoke_raw``, sizes as macros), ``<name>.c`` (weights as ``const``
    arrays, one static arena planned offline, the graph as straight-line kernel calls) and the
    kernel sources it uses (``tfc_kernels.h``, ``tfc_float.c``, ``tfc_int8.c``,
    ``tfc_binary.c``).

    Args:
        flatbuffer: ``.tflite`` bytes (float32, int8 or Larq Compute Engine model) or a path.
        out_dir: folder to write (created).
        cpu: ``"host"``, ``"cortex-m4"``, ``"cortex-m7"`` or ``"cortex-m33"``: the target that
            :attr:`CLibrary.flash_bytes` / :attr:`CLibrary.ram_bytes` are measured for.
        name: C identifier used for the file names and symbols.
        cmsis_nn: ``None`` (default) or ``True``: int8 layers call CMSIS-NN when the user's build
            defines ``TFC_USE_CMSIS_NN`` (scratch buffers are planned in the arena); ``False``:
            portable kernels only. ``True`` also makes :meth:`CLibrary.verify` and the size
            figures use CMSIS-NN builds.
        stream: row streaming of large activations (``"auto"``, ``True`` or ``False``; see
            :mod:`tfcompress.codegen.planner`).

    Returns:
        :class:`CLibrary`.

    Raises:
        CodegenError: an unsupported operator or attribute (named, before anything is written).
    """
    if cpu not in CPUS:
        raise ValueError(f"cpu must be one of {', '.join(CPUS)}, got {cpu!r}.")
    _check_name(name)
    if isinstance(flatbuffer, (str, Path)):
        flatbuffer = Path(flatbuffer).read_bytes()
    graph = fold_constants(read_graph(flatbuffer))
    check_supported(graph)
    ctx = Context(graph, f"tfc_{name}", cmsis=cmsis_nn is not False)
    steps = lower(graph, ctx)
    p = plan(graph, steps, stream=stream)
    check_plan(graph, p)
    source, header, kernels = write_c(graph, steps, p, ctx, name, cpu=cpu)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.c").write_text(source)
    (out / f"{name}.h").write_text(header)
    shutil.copyfile(KERNEL_DIR / "tfc_kernels.h", out / "tfc_kernels.h")
    c_files = [f"{name}.c"]
    for k in kernels:
        shutil.copyfile(KERNEL_DIR / KERNEL_FILES[k], out / KERNEL_FILES[k])
        c_files.append(KERNEL_FILES[k])
    inp, outp = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    meta = {
        "name": name, "cpu": cpu, "cmsis_nn": cmsis_nn, "arena_bytes": p.arena_bytes,
        "constant_bytes": ctx.const_bytes, "c_files": c_files,
        "input": {"shape": list(inp.shape), "dtype": inp.dtype,
                  "scale": inp.qscale if inp.quantized else None, "zero_point": inp.qzero},
        "output": {"shape": list(outp.shape), "dtype": outp.dtype,
                   "scale": outp.qscale if outp.quantized else None, "zero_point": outp.qzero},
        "ops": [n.op for n in graph.nodes],
        "schedule": p.describe().splitlines(),
        "streamed_tensors": {graph.tensors[t].name: rows for t, rows in p.band.items()},
    }
    (out / "tfcompress_codegen.json").write_text(json.dumps(meta, indent=1))
    return CLibrary(out, meta, flatbuffer)


class CLibrary:
    """A generated C library folder.

    Attributes:
        path: the folder.
        name: symbol prefix (``tfc_<name>_invoke``).
        cpu: the target the size figures are measured for.
        arena_bytes: the planned arena (the static ``tfc_<name>_arena``).
        constant_bytes: bytes of the constant arrays (weights, biases, multipliers, tables).
        c_files: the C sources to compile.
        input / output: shape, dtype and quantization of the model's I/O.

    Sizes (:attr:`flash_bytes`, :attr:`ram_bytes`, :attr:`stack_bytes`, :meth:`sizes`) are
    measured from objects compiled with ``-Os`` for :attr:`cpu` (the host compiler for
    ``"host"``): flash = code + read-only data + initialised data of the library's objects,
    RAM = their ``.bss``/``.data`` (the arena) + the worst-case stack of
    ``tfc_<name>_invoke`` from the compiler's call graph (``-fcallgraph-info=su``).
    """

    def __init__(self, path, meta, flatbuffer=None):
        self.path = Path(path)
        self.meta = meta
        self.flatbuffer = flatbuffer
        self.name = meta["name"]
        self.cpu = meta["cpu"]
        self.arena_bytes = meta["arena_bytes"]
        self.constant_bytes = meta["constant_bytes"]
        self.c_files = list(meta["c_files"])
        self.input = meta["input"]
        self.output = meta["output"]
        self.cmsis_nn = meta["cmsis_nn"]
        self._sizes = None
        self._hosts = {}

    @classmethod
    def load(cls, path, flatbuffer=None):
        path = Path(path)
        meta = json.loads((path / "tfcompress_codegen.json").read_text())
        return cls(path, meta, flatbuffer)

    def __repr__(self):
        return (f"CLibrary({str(self.path)!r}, name={self.name!r}, cpu={self.cpu!r}, "
                f"arena_bytes={self.arena_bytes})")

    # ----------------------------------------------------------------- sizes
    def sizes(self, *, cmsis_nn=None):
        """Section sizes of the compiled library for :attr:`cpu` (see :mod:`.cortexm`)."""
        from tfcompress.codegen import cortexm

        use = bool(self.cmsis_nn) if cmsis_nn is None else bool(cmsis_nn)
        if self._sizes is None or self._sizes.get("cmsis_nn") != use:
            self._sizes = cortexm.library_sizes(self, cmsis_nn=use)
        return self._sizes

    @property
    def flash_bytes(self):
        return self.sizes()["flash_bytes"]

    @property
    def ram_bytes(self):
        return self.sizes()["ram_bytes"]

    @property
    def stack_bytes(self):
        return self.sizes()["stack_bytes"]

    # ----------------------------------------------------------------- host runs
    def host(self, *, cmsis_nn=False, cmsis_root=None):
        """The library compiled for the host (cached) as a :class:`~.build.HostModel`."""
        key = bool(cmsis_nn)
        if key not in self._hosts:
            so = build.host_library(self.path, self.name, self.c_files, cmsis_nn=key,
                                    cmsis_root_=cmsis_root)
            self._hosts[key] = build.HostModel(
                so, self.name, self.input["dtype"], int(np.prod(self.input["shape"])),
                self.output["dtype"], int(np.prod(self.output["shape"])), cmsis_nn=key)
        return self._hosts[key]

    def quantize(self, x):
        """Float inputs -> the model's raw input type, as the C ``invoke`` does."""
        from tfcompress.codegen.reference import quantize_input

        x = self._check_inputs(x)
        if self.input["dtype"] == "int8":
            return quantize_input(x, self.input["scale"], self.input["zero_point"])
        return x.astype(np.float32)

    def dequantize(self, q):
        from tfcompress.codegen.reference import dequantize_output

        if self.output["dtype"] == "int8":
            return dequantize_output(q, self.output["scale"], self.output["zero_point"])
        return np.asarray(q, np.float32)

    def _check_inputs(self, x):
        x = np.asarray(x)
        shape = tuple(self.input["shape"])
        per = int(np.prod(shape[1:]))
        if x.ndim >= 1 and x.shape[1:] == shape[1:]:
            pass
        elif x.shape == shape[1:]:
            x = x[None]
        else:
            raise ValueError(f"Inputs of shape {x.shape} do not match the model input {shape} "
                             f"(expected (N,) + {shape[1:]}, {per} values per example).")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ValueError("Inputs contain NaN or infinite values.")
        return x

    def predict(self, x, *, cmsis_nn=False):
        """Run the host build on float inputs ``x`` (first axis = examples); float outputs."""
        raw = self.host(cmsis_nn=cmsis_nn).run_raw(self.quantize(x))
        return self.dequantize(raw).reshape((-1,) + tuple(self.output["shape"][1:]))

    def verify(self, x, y=None, *, cmsis_nn=None, runtime=None, reference_kernel="reference"):
        """Compare the host build with the reference interpreter on ``x`` (and accuracy on
        ``y``). Both get the same raw inputs (``x`` quantized once for int8 models).

        Args:
            x: float inputs, first axis = examples.
            y: optional integer labels.
            cmsis_nn: build with CMSIS-NN (default: as generated).
            runtime: ``"lce"`` or ``"litert"`` (default: from the file's ops).
            reference_kernel: LCE kernel for the reference (``"reference"`` or
                ``"indirect_bgemm"``).

        Returns:
            :class:`VerifyReport`.
        """
        from tfcompress.codegen.reference import Reference

        if self.flatbuffer is None:
            raise CodegenError("verify() needs the flatbuffer: use the CLibrary returned by "
                               "generate()/to_c(), or CLibrary.load(path, flatbuffer).")
        raw = self.quantize(x)
        use = bool(self.cmsis_nn) if cmsis_nn is None else bool(cmsis_nn)
        ours = self.host(cmsis_nn=use).run_raw(raw)
        ref_it = Reference(self.flatbuffer, runtime=runtime, lce_kernel=reference_kernel)
        ref = ref_it.run_raw(raw).reshape(ours.shape)
        a, b = self.dequantize(ours), self.dequantize(ref)
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        scale = float(np.max(np.abs(b))) or 1.0
        identical = float(np.mean(np.all(ours.view(np.uint8).reshape(len(ours), -1)
                                          == ref.view(np.uint8).reshape(len(ref), -1), axis=1)))
        rep = VerifyReport(
            examples=len(raw), identical=identical, max_abs_diff=float(diff.max(initial=0.0)),
            max_rel_diff=float(diff.max(initial=0.0)) / scale,
            agreement=float(np.mean(a.argmax(-1) == b.argmax(-1))), runtime=ref_it.runtime,
            cmsis_nn=use)
        if y is not None:
            y = np.asarray(y).reshape(-1)
            if len(y) != len(raw):
                raise ValueError(f"{len(y)} labels for {len(raw)} inputs.")
            rep.accuracy = float(np.mean(a.argmax(-1) == y))
            rep.reference_accuracy = float(np.mean(b.argmax(-1) == y))
        return rep

    # ----------------------------------------------------------------- Cortex-M
    def run_qemu(self, x, *, cpu=None, cmsis_nn=None, icount=True, timeout=1800):
        """Cross-compile for a Cortex-M, run ``x`` in ``qemu-system-arm`` (MPS2 board) and
        return a :class:`~tfcompress.codegen.cortexm.QemuResult` (raw outputs, instructions per
        inference from SysTick under ``-icount shift=0``, measured stack)."""
        from tfcompress.codegen import cortexm

        use = bool(self.cmsis_nn) if cmsis_nn is None else bool(cmsis_nn)
        cpu = cpu or (self.cpu if self.cpu != "host" else "cortex-m4")
        return cortexm.run_qemu(self, self.quantize(x), cpu=cpu, cmsis_nn=use, icount=icount,
                                timeout=timeout)


__all__ = ["CPUS", "CLibrary", "VerifyReport", "generate"]
