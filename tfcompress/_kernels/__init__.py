"""tfcompress's own kernels for LCE flatbuffers, run inside ai-edge-litert.

A binarized model converted with ``tfcompress.convert(model, target="lce")`` holds the custom
ops ``LceQuantize``, ``LceBconv2d``, ``LceBMaxPool2d`` and ``LceDequantize``. ai-edge-litert
has no kernels for them, and its Python API has no supported way to add custom-op kernels
(its op resolver is private C++). What it does support is TFLite's external-delegate
interface: :func:`ai_edge_litert.interpreter.load_delegate` loads a shared library that
exports ``tflite_plugin_create_delegate``. The compiled extension ``_lce_kernels`` is such a
library: its delegate claims every ``Lce*`` node and runs it with bit-packed kernels
(AVX-512 VPOPCNTDQ, AVX2 or portable C++, chosen at run time from the CPU), multithreaded with
the interpreter's ``num_threads``.

It also claims the float ops around the binary layers that it can run as fast as XNNPACK
and fuse with them (ADD, SUB, MUL, PRELU, RELU/RELU6/RELU_N1_TO_1, LOGISTIC, channel
CONCATENATION, MAX_POOL_2D, AVERAGE_POOL_2D, RESHAPE, small FULLY_CONNECTED), after checking
their types, shapes and parameters. LiteRT groups the claimed nodes into partitions; within
one, each ``LceQuantize`` is folded into the op that produces its input (the sign bits are
packed while the row is computed), elementwise ops into the binary conv / concatenation /
pooling / elementwise op before them (``x + BN(bconv(x))`` is one pass), a value another op
would only read once is written in place of it, and tensors that never leave the partition
live in its own arena. The fused ops perform the same float operations as the ops they
replace, so ``delegate(fuse=False)`` gives bit-identical outputs. Convolutions, depthwise
convolutions, large dense layers and everything else stay with LiteRT (XNNPACK).

The extension is compiled by ``pip install`` with the system C++ compiler. If that failed, the
package still works; :func:`available` is then False and :func:`unavailable_reason` says why.

The library reads LiteRT's C structs directly (``src/tflite_abi.h``), so it is only used
with the ai-edge-litert releases it was tested with (``TESTED_LITERT``); with any other
release :func:`available` is False and the reason names LCE's interpreter
(``runtime="lce"``) as the fallback. ``TFCOMPRESS_KERNELS_ALLOW_UNTESTED_LITERT=1`` opts in
anyway (the library's run-time layout check still refuses a layout it does not recognise).

Environment:

- ``TFCOMPRESS_KERNELS_ISA`` = ``auto`` | ``portable`` | ``avx2`` | ``avx512`` forces a
  level (an unsupported one is an error), like the ``isa=`` argument of :func:`delegate`.
- ``TFCOMPRESS_KERNELS_ALLOW_UNTESTED_LITERT=1``: use the kernels with an untested
  ai-edge-litert release (see above).
- ``TFCOMPRESS_KERNELS_LIBRARY``: path of a kernel library to load instead of the installed
  one (a development or sanitizer build).
"""

import ctypes
import importlib.machinery
import os
from importlib import metadata
from pathlib import Path

from tfcompress.errors import InterpreterError

ISA_LEVELS = ("portable", "avx2", "avx512")
ENV_ISA = "TFCOMPRESS_KERNELS_ISA"
ENV_ALLOW_UNTESTED = "TFCOMPRESS_KERNELS_ALLOW_UNTESTED_LITERT"
ENV_LIBRARY = "TFCOMPRESS_KERNELS_LIBRARY"
BUILD_ERROR_FILE = "BUILD_ERROR.txt"  # written by setup.py when the compile failed
# The ai-edge-litert releases whose TFLite C structs these kernels were checked against (the
# library also checks every tensor record at run time and refuses a mismatching layout).
TESTED_LITERT = ("2.3.0",)
_HERE = Path(__file__).resolve().parent
_cache = {}

__all__ = ["ENV_ALLOW_UNTESTED", "ENV_ISA", "ENV_LIBRARY", "ISA_LEVELS", "TESTED_LITERT",
           "available", "best_isa", "delegate", "library_path", "litert_version",
           "profile_report", "profile_reset", "supported_isas", "unavailable_reason"]

ABI_VERSION = 2  # tfcompress_kernels_abi_version() of the library this loader expects


def library_path():
    """Path of the kernel library to load (``$TFCOMPRESS_KERNELS_LIBRARY`` if set, else the
    compiled extension next to this file), or None when it was not built."""
    override = os.environ.get(ENV_LIBRARY)
    if override:
        return Path(override)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _HERE / f"_lce_kernels{suffix}"
        if path.is_file():
            return path
    return None


def _build_error(path):
    """The compiler error that setup.py recorded, if the last build failed (None otherwise,
    or when the library on disk is newer than the record)."""
    record = _HERE / BUILD_ERROR_FILE
    if not record.is_file():
        return None
    if path is not None and path.is_file() and path.stat().st_mtime > record.stat().st_mtime:
        return None
    text = record.read_text(errors="replace").strip()
    lines = text.splitlines()
    return "\n".join(lines[:1] + lines[-25:]) if len(lines) > 26 else text


def litert_version():
    """The installed ai-edge-litert version (None when it is not installed)."""
    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        return None


def _litert_refusal():
    version = litert_version()
    if version in TESTED_LITERT or os.environ.get(ENV_ALLOW_UNTESTED) == "1":
        return None
    tested = ", ".join(TESTED_LITERT)
    return (f"ai-edge-litert {version} is installed, but tfcompress's kernels read LiteRT's C "
            f"structs and were only tested with ai-edge-litert {tested}. Use runtime='lce' "
            "(Larq Compute Engine's interpreter runs the same file), install "
            f"ai-edge-litert=={TESTED_LITERT[-1]}, or set {ENV_ALLOW_UNTESTED}=1 to try anyway "
            "(a layout check at load time still refuses a layout it does not recognise)")


def _load():
    if "lib" not in _cache:
        path = library_path()
        build_error = None if os.environ.get(ENV_LIBRARY) else _build_error(path)
        _cache["lib"] = None
        if build_error is not None:
            where = ("was not built" if path is None else
                     f"failed to rebuild (the library {path.name} on disk is from an older build)")
            _cache["error"] = (f"the C++ extension tfcompress/_kernels/_lce_kernels {where}; the "
                               f"install recorded:\n{build_error}\nFix that and reinstall "
                               "(`pip install -e .`).")
        elif path is None:
            _cache["error"] = (
                "the compiled extension tfcompress/_kernels/_lce_kernels was not built (a C++17 "
                "compiler is needed at `pip install` time; reinstall with one, e.g. "
                "`pip install -e .` after installing g++)"
            )
        else:
            try:
                lib = ctypes.CDLL(str(path))
                lib.tfcompress_kernels_best_isa.restype = ctypes.c_char_p
                lib.tfcompress_kernels_abi_version.restype = ctypes.c_int
                lib.tfcompress_kernels_profile_json.restype = ctypes.c_int
                lib.tfcompress_kernels_profile_json.argtypes = [ctypes.c_void_p,
                                                               ctypes.c_char_p, ctypes.c_int]
                lib.tfcompress_kernels_profile_reset.argtypes = [ctypes.c_void_p]
                abi = lib.tfcompress_kernels_abi_version()
                if abi != ABI_VERSION:
                    _cache["error"] = (f"the kernel library {path} is from another version of "
                                       f"tfcompress (ABI {abi}, need {ABI_VERSION}); reinstall "
                                       "(`pip install -e .`)")
                else:
                    _cache["lib"] = lib
                    _cache["error"] = None
            except (OSError, AttributeError) as err:
                _cache["error"] = f"the kernel library {path} could not be loaded: {err}"
    return _cache["lib"]


def available():
    """True when the kernel library is built, loads, and may be used with the installed
    ai-edge-litert (a tested release, or ``TFCOMPRESS_KERNELS_ALLOW_UNTESTED_LITERT=1``)."""
    return _load() is not None and _litert_refusal() is None


def unavailable_reason():
    """Why :func:`available` is False (None when it is True)."""
    _load()
    return _cache.get("error") or _litert_refusal()


def best_isa():
    """The fastest level this CPU supports: ``"avx512"``, ``"avx2"`` or ``"portable"``.

    Raises:
        InterpreterError: the library is not built or does not load.
    """
    lib = _load()
    if lib is None:
        raise InterpreterError(f"tfcompress kernels are unavailable: {unavailable_reason()}")
    return lib.tfcompress_kernels_best_isa().decode()


def supported_isas():
    """Every level that runs on this CPU, slowest first."""
    best = best_isa()
    return ISA_LEVELS[: ISA_LEVELS.index(best) + 1]


def delegate(*, isa=None, num_threads=None, profile=False, fuse=True, builtins=True):
    """A LiteRT delegate that runs the ``Lce*`` ops of a model with tfcompress's kernels.

    Args:
        isa: ``"auto"`` (default: ``$TFCOMPRESS_KERNELS_ISA`` if set, else the best level),
            ``"portable"``, ``"avx2"`` or ``"avx512"``.
        num_threads: threads for the binary convolutions; None follows the interpreter's
            ``num_threads``.
        profile: time every kernel call (read with :func:`profile_report`).
        fuse: fold float elementwise ops and ``LceQuantize`` into the ops that produce their
            inputs (False: run every claimed op on its own; same results, bit for bit).
        builtins: also take over the float builtin ops around the binary layers (ADD, MUL,
            CONCATENATION, pooling, ...); False leaves them to LiteRT (XNNPACK).

    Returns:
        an ``ai_edge_litert.interpreter.Delegate`` for ``Interpreter(experimental_delegates=...)``.

    Raises:
        InterpreterError: the kernels are not built, or the installed ai-edge-litert is not
            a tested release (and the opt-in is not set).
        ValueError: an unknown or unsupported ``isa``, or a bad ``num_threads``.
    """
    if not available():
        raise InterpreterError(f"tfcompress kernels are unavailable: {unavailable_reason()}")
    isa = isa or os.environ.get(ENV_ISA) or "auto"
    if isa != "auto" and isa not in ISA_LEVELS:
        raise ValueError(f"Unknown ISA level {isa!r}; valid: auto, {', '.join(ISA_LEVELS)}.")
    options = {"isa": isa}
    if num_threads is not None:
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}.")
        options["num_threads"] = str(num_threads)
    if profile:
        options["profile"] = "1"
    if not fuse:
        options["fuse"] = "0"
    if not builtins:
        options["builtins"] = "0"
    from ai_edge_litert.interpreter import load_delegate

    return load_delegate(str(library_path()), options)


def _native(delegate_obj):
    pointer = delegate_obj._get_native_delegate_pointer()
    if not pointer:
        raise ValueError("the delegate has been freed")
    return ctypes.c_void_p(pointer)


def profile_report(delegate_obj):
    """Per-kernel timings of a delegate made with ``delegate(profile=True)``, in graph order:
    a list of ``{"name", "calls", "seconds"}`` (``seconds`` summed over the calls)."""
    import json

    lib = _load()
    if lib is None:
        raise InterpreterError(f"tfcompress kernels are unavailable: {unavailable_reason()}")
    ptr = _native(delegate_obj)
    need = lib.tfcompress_kernels_profile_json(ptr, None, 0)
    buf = ctypes.create_string_buffer(need + 1)
    lib.tfcompress_kernels_profile_json(ptr, buf, need + 1)
    return json.loads(buf.value.decode())


def profile_reset(delegate_obj):
    """Zero the timers of a delegate made with ``delegate(profile=True)``."""
    lib = _load()
    if lib is None:
        raise InterpreterError(f"tfcompress kernels are unavailable: {unavailable_reason()}")
    lib.tfcompress_kernels_profile_reset(_native(delegate_obj))
