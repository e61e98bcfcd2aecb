"""tfcompress's own kernels for LCE flatbuffers, run inside ai-edge-litert.

A binarized model converted with ``tfcompress.convert(model, target="lce")`` holds the custom
ops ``LceQuantize``, ``LceBconv2d``, ``LceBMaxPool2d`` and ``LceDequantize``. ai-edge-litert
has no kernels for them, and its Python API has no supported way to add custom-op kernels
(its op resolver is private C++). What it does support is TFLite's external-delegate
interface: :func:`ai_edge_litert.interpreter.load_delegate` loads a shared library that
exports ``tflite_plugin_create_delegate``. The compiled extension ``_lce_kernels`` is such a
library: its delegate claims every ``Lce*`` node and runs it with bit-packed kernels
(AVX-512 VPOPCNTDQ, AVX2 or portable C++, chosen at run time from the CPU), multithreaded with
the interpreter's ``num_threads``. All other ops stay with LiteRT (XNNPACK).

The extension is compiled by ``pip install`` with the system C++ compiler. If that failed, the
package still works; :func:`available` is then False and :func:`unavailable_reason` says why.

Environment: ``TFCOMPRESS_KERNELS_ISA`` = ``auto`` | ``portable`` | ``avx2`` | ``avx512``
forces a level (an unsupported one is an error), like the ``isa=`` argument of
:func:`delegate`.
"""

import ctypes
import importlib.machinery
import os
import warnings
from importlib import metadata
from pathlib import Path

ISA_LEVELS = ("portable", "avx2", "avx512")
ENV_ISA = "TFCOMPRESS_KERNELS_ISA"
# The ai-edge-litert releases whose TFLite C structs these kernels were checked against (the
# library also checks every tensor record at run time and refuses a mismatching layout).
TESTED_LITERT = ("2.3.0",)
_HERE = Path(__file__).resolve().parent
_cache = {}

__all__ = ["ENV_ISA", "ISA_LEVELS", "TESTED_LITERT", "available", "best_isa", "delegate",
           "library_path",
           "supported_isas", "unavailable_reason"]


def library_path():
    """Path of the compiled kernel library, or None when it was not built."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _HERE / f"_lce_kernels{suffix}"
        if path.is_file():
            return path
    return None


def _load():
    if "lib" not in _cache:
        path = library_path()
        if path is None:
            _cache["lib"] = None
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
                _cache["lib"] = lib
                _cache["error"] = None
            except (OSError, AttributeError) as err:
                _cache["lib"] = None
                _cache["error"] = f"the kernel library {path} could not be loaded: {err}"
    return _cache["lib"]


def available():
    """True when the kernel library is built and loads."""
    return _load() is not None


def unavailable_reason():
    """Why :func:`available` is False (None when it is True)."""
    _load()
    return _cache.get("error")


def best_isa():
    """The fastest level this CPU supports: ``"avx512"``, ``"avx2"`` or ``"portable"``."""
    lib = _load()
    if lib is None:
        raise RuntimeError(f"tfcompress kernels are unavailable: {unavailable_reason()}")
    return lib.tfcompress_kernels_best_isa().decode()


def supported_isas():
    """Every level that runs on this CPU, slowest first."""
    best = best_isa()
    return ISA_LEVELS[: ISA_LEVELS.index(best) + 1]


def delegate(*, isa=None, num_threads=None):
    """A LiteRT delegate that runs the ``Lce*`` ops of a model with tfcompress's kernels.

    Args:
        isa: ``"auto"`` (default: ``$TFCOMPRESS_KERNELS_ISA`` if set, else the best level),
            ``"portable"``, ``"avx2"`` or ``"avx512"``.
        num_threads: threads for the binary convolutions; None follows the interpreter's
            ``num_threads``.

    Returns:
        an ``ai_edge_litert.interpreter.Delegate`` for ``Interpreter(experimental_delegates=...)``.

    Raises:
        RuntimeError: the kernels are not built.
        ValueError: an unknown or unsupported ``isa``, or a bad ``num_threads``.
    """
    if _load() is None:
        raise RuntimeError(f"tfcompress kernels are unavailable: {unavailable_reason()}")
    isa = isa or os.environ.get(ENV_ISA) or "auto"
    if isa != "auto" and isa not in ISA_LEVELS:
        raise ValueError(f"Unknown ISA level {isa!r}; valid: auto, {', '.join(ISA_LEVELS)}.")
    options = {"isa": isa}
    if num_threads is not None:
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}.")
        options["num_threads"] = str(num_threads)
    try:
        litert = metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        litert = None
    if litert not in TESTED_LITERT and not _cache.get("warned"):
        _cache["warned"] = True
        tested = ", ".join(TESTED_LITERT)
        warnings.warn(f"tfcompress kernels were tested with ai-edge-litert {tested}, not "
                      f"{litert}; the run-time layout check will refuse an incompatible one.",
                      RuntimeWarning, stacklevel=2)
    from ai_edge_litert.interpreter import load_delegate

    return load_delegate(str(library_path()), options)
