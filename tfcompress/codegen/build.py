"""Compile generated C on the host (a shared library called through ctypes) and CMSIS-NN.

Builds are cached by content (sources + flags) under ``$TFCOMPRESS_CACHE`` (default
``~/.cache/tfcompress``) so tests and benchmarks compile each model and CMSIS-NN once.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tfcompress.codegen.graph import CodegenError

WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
DEFAULT_CMSIS = Path(__file__).resolve().parents[2].parent / "shared" / "vendor" / "CMSIS-NN"


def cache_dir():
    root = os.environ.get("TFCOMPRESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tfcompress")
    path = Path(root) / "codegen"
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_tool(name):
    path = shutil.which(name)
    if path is None:
        hint = ("apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
                if "arm" in name else "install a C compiler (gcc)")
        raise CodegenError(f"{name} was not found on PATH ({hint}).")
    return path


def cmsis_root(root=None):
    """The CMSIS-NN source folder: ``root``, ``$TFCOMPRESS_CMSIS_NN`` or the project's vendored
    copy (``../shared/vendor/CMSIS-NN``)."""
    for cand in (root, os.environ.get("TFCOMPRESS_CMSIS_NN"), DEFAULT_CMSIS):
        if cand and (Path(cand) / "Include" / "arm_nnfunctions.h").is_file():
            return Path(cand)
    raise CodegenError("CMSIS-NN sources not found: pass cmsis_root= or set TFCOMPRESS_CMSIS_NN "
                       "to a folder holding Include/ and Source/ of ARM-software/CMSIS-NN.")


def cmsis_sources(root):
    """CMSIS-NN's integer sources (the float16/float32 ones need other defines and are unused)."""
    srcs = sorted(Path(root).glob("Source/*/*.c"))
    return [s for s in srcs if not s.name.endswith(("_f16.c", "_f32.c", "_flt.c"))]


def _digest(parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _run(cmd, cwd=None, what="compile"):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CodegenError(f"{what} failed ({' '.join(map(str, cmd[:3]))} ...):\n"
                           f"{(r.stdout + r.stderr)[-4000:]}")
    return r


def compile_objects(sources, out_dir, cc, flags, includes=()):
    """Compile each source to ``out_dir/<stem>.o`` in parallel (2 jobs); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inc = [f"-I{p}" for p in includes]
    objs, procs = [], []
    for src in sources:
        obj = out_dir / (Path(src).stem + ".o")
        objs.append(obj)
        procs.append((subprocess.Popen([cc, *flags, *inc, "-c", str(src), "-o", str(obj)],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
                      src))
        if len(procs) >= max(2, os.cpu_count() or 2):
            _drain(procs)
    _drain(procs)
    return objs


def _drain(procs):
    errors = []
    while procs:
        p, src = procs.pop(0)
        out, _ = p.communicate()
        if p.returncode != 0:
            errors.append(f"{src}:\n{out[-3000:]}")
    if errors:
        raise CodegenError("compile failed:\n" + "\n".join(errors))


def cmsis_archive(cc, flags, root=None, tag="host"):
    """A static CMSIS-NN library for ``cc``/``flags``, built once and cached."""
    root = cmsis_root(root)
    srcs = cmsis_sources(root)
    key = _digest([cc, *flags, root.resolve(), *(s.stat().st_mtime_ns for s in srcs)])
    out = cache_dir() / f"cmsis-{tag}-{key}"
    lib = out / "libcmsisnn.a"
    if lib.is_file():
        return lib, root
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix="cmsis-tmp-"))
    try:
        objs = compile_objects(srcs, tmp / "obj", cc, flags, includes=[root / "Include"])
        ar = shutil.which(cc.replace("gcc", "ar")) or find_tool("ar")
        _run([ar, "rcs", str(tmp / "libcmsisnn.a"), *map(str, objs)], what="ar")
        out.mkdir(parents=True, exist_ok=True)
        for ci in (tmp / "obj").glob("*.ci"):  # call graphs (-fcallgraph-info) for stack sizes
            os.replace(ci, out / ci.name)
        os.replace(tmp / "libcmsisnn.a", lib)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lib, root


class HostModel:
    """A generated model compiled for the host and loaded with ctypes.

    ``run_raw(x)`` takes an array in the model's input type (one example or a batch along the
    first axis) and returns the raw outputs (int8 or float32), one row per example.
    """

    def __init__(self, path, name, in_dtype, in_size, out_dtype, out_size, cmsis_nn=False):
        self.path = Path(path)
        self.name = name
        self.cmsis_nn = cmsis_nn
        self.in_dtype, self.in_size = np.dtype(in_dtype), int(in_size)
        self.out_dtype, self.out_size = np.dtype(out_dtype), int(out_size)
        self._lib = ctypes.CDLL(str(self.path))
        self._fn = getattr(self._lib, f"tfc_{name}_invoke_raw")
        self._fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._fn.restype = ctypes.c_int
        self._ffn = getattr(self._lib, f"tfc_{name}_invoke")
        self._ffn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._ffn.restype = ctypes.c_int

    def run_raw(self, x):
        x = np.ascontiguousarray(x, dtype=self.in_dtype).reshape(-1, self.in_size)
        out = np.empty((len(x), self.out_size), self.out_dtype)
        for i in range(len(x)):
            rc = self._fn(x[i].ctypes.data, out[i].ctypes.data)
            if rc != 0:
                raise CodegenError(f"tfc_{self.name}_invoke_raw returned {rc} (a CMSIS-NN call "
                                   "failed or its scratch buffer is too small).")
        return out

    def run_float(self, x):
        """The float entry point (quantizes/dequantizes int8 models in C)."""
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, self.in_size)
        out = np.empty((len(x), self.out_size), np.float32)
        for i in range(len(x)):
            rc = self._ffn(x[i].ctypes.data, out[i].ctypes.data)
            if rc != 0:
                raise CodegenError(f"tfc_{self.name}_invoke returned {rc}.")
        return out


def _kernel_objects(src_dir, files, cc, flags, cmsis_inc):
    """Objects of the kernel sources, cached by content: every model shares them."""
    objs = []
    hdr = Path(src_dir, "tfc_kernels.h").read_bytes()
    for f in files:
        text = Path(src_dir, f).read_bytes()
        key = _digest([cc, *flags, cmsis_inc or "", hdr, text])
        obj = cache_dir() / "objects" / f"{Path(f).stem}-{key}.o"
        if not obj.is_file():
            obj.parent.mkdir(parents=True, exist_ok=True)
            tmp = obj.with_suffix(f".{os.getpid()}.tmp.o")
            inc = [f"-I{src_dir}"] + ([f"-I{cmsis_inc}", "-DTFC_USE_CMSIS_NN"] if cmsis_inc else [])
            _run([cc, *flags, *inc, "-c", str(Path(src_dir, f)), "-o", str(tmp)], what="host build")
            os.replace(tmp, obj)
        objs.append(obj)
    return objs


def host_library(src_dir, name, c_files, *, cmsis_nn=False, cmsis_root_=None, opt="-O2",
                 extra_flags=()):
    """Compile ``c_files`` (paths in ``src_dir``) into a cached shared library; returns its path.

    Kernel objects are cached separately from the model, so a test session compiles each
    kernel source once and every model only its own ``<name>.c``."""
    cc = find_tool("gcc")
    flags = [*WARNINGS, opt, "-fPIC", *extra_flags]
    model_c = f"{name}.c"
    kernels = [f for f in c_files if f != model_c]
    cmsis_inc, lib = None, None
    if cmsis_nn:
        lib, root = cmsis_archive(cc, ["-std=c99", "-O2", "-fPIC"], cmsis_root_, tag="host")
        cmsis_inc = root / "Include"
    kobjs = _kernel_objects(src_dir, kernels, cc, flags, cmsis_inc)
    key = _digest([cc, *flags, int(bool(cmsis_nn)), Path(src_dir, model_c).read_bytes(),
                   Path(src_dir, f"{name}.h").read_bytes(), *(o.name for o in kobjs)])
    out = cache_dir() / f"host-{name}-{key}"
    so = out / f"lib{name}.so"
    if so.is_file():
        return so
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix="host-tmp-"))
    try:
        _run([cc, *flags, f"-I{src_dir}", "-c", str(Path(src_dir, model_c)), "-o",
              str(tmp / "model.o")], what="host build")
        cmd = [cc, *flags, "-shared", "-o", str(tmp / so.name), str(tmp / "model.o"),
               *map(str, kobjs)]
        if lib is not None:
            cmd.append(str(lib))
        _run(cmd + ["-lm"], what="host link")
        out.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / so.name, so)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return so


__all__ = ["HostModel", "cache_dir", "cmsis_archive", "cmsis_root", "cmsis_sources",
           "compile_objects", "find_tool", "host_library"]
