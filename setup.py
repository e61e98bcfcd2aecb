"""Build script: metadata lives in setup.cfg; this adds the optional C++ kernel extension.

``tfcompress/_kernels/_lce_kernels`` (tfcompress's LCE-op kernels for ai-edge-litert) needs only
a C++17 compiler and the Python headers; no TensorFlow/LiteRT headers (see
``tfcompress/_kernels/src/tflite_abi.h``).

If it cannot be compiled, the install goes on without it:

- the compiler's own error (its last lines) is printed on stderr in a framed block, and
  written to ``tfcompress/_kernels/BUILD_ERROR.txt`` next to where the library would have
  gone. pip hides the output of a build that succeeds, so that file is what a user sees
  later: ``tfcompress doctor``, :func:`tfcompress._kernels.unavailable_reason` and
  ``runtime="tfcompress"`` quote it.
- ``TFCOMPRESS_REQUIRE_KERNELS=1`` makes a failed compile fail the install instead (pip then
  shows the compiler's error); CI sets it.
"""

import os
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = ["avx2.cc", "avx512.cc", "bconv2d.cc", "delegate.cc", "epilogue.cc", "float_ops.cc",
           "module.cc", "ops.cc", "partition.cc", "portable.cc", "threadpool.cc"]
HEADERS = ["epilogue.h", "flexbuffers_lite.h", "kernels.h", "op_util.h", "ops.h", "partition.h",
           "threadpool.h", "tflite_abi.h"]
ERROR_FILE = "BUILD_ERROR.txt"
REQUIRE_ENV = "TFCOMPRESS_REQUIRE_KERNELS"
TAIL_LINES = 40  # compiler output lines kept in the message


class KernelBuildError(Exception):
    """The compiler (or linker) failed; the message holds the end of its output."""


class OptionalBuildExt(build_ext):
    """Compile the kernels if possible; report a failure loudly, fail only when required."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        for ext in self.extensions:
            if ctype == "msvc":
                ext.extra_compile_args = ["/O2", "/std:c++17", "/EHsc"]
            else:
                # -ffp-contract=off: no fused multiply-add behind our back, so a fused chain of
                # float ops rounds exactly as the ops run one by one
                ext.extra_compile_args = ["-O3", "-std=c++17", "-fvisibility=hidden", "-pthread",
                                          "-ffp-contract=off", "-Wno-uninitialized",
                                          "-Wno-maybe-uninitialized"]
                ext.extra_compile_args += os.environ.get("TFCOMPRESS_KERNELS_CFLAGS", "").split()
                ext.extra_link_args = ["-pthread"]
                ext.extra_link_args += os.environ.get("TFCOMPRESS_KERNELS_LDFLAGS", "").split()
        self.compiler.spawn = self._spawn
        super().build_extensions()

    @staticmethod
    def _spawn(cmd, **kwargs):
        """Runs one compiler/linker command, echoing its output and keeping it for the error
        message (distutils' own spawn only reports the exit status)."""
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, errors="replace")
        except OSError as err:
            raise KernelBuildError(f"could not run the compiler {cmd[0]!r}: {err}") from err
        if proc.stdout:
            sys.stderr.write(proc.stdout)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.rstrip().splitlines()[-TAIL_LINES:])
            raise KernelBuildError(f"{' '.join(cmd[:1])} exited with status {proc.returncode}:\n"
                                   f"{tail or '(no output)'}")

    def run(self):
        try:
            super().run()
        except KernelBuildError:
            raise
        except Exception as err:  # no compiler at all: distutils raises several error types
            self._failed(None, err)

    def build_extension(self, ext):
        error_file = os.path.join(os.path.dirname(self.get_ext_fullpath(ext.name)), ERROR_FILE)
        try:
            super().build_extension(ext)
        except Exception as err:
            self._failed(error_file, err)
            return
        if os.path.exists(error_file):
            os.remove(error_file)

    def _failed(self, error_file, err):
        text = (f"tfcompress's C++ kernels (tfcompress._kernels._lce_kernels) could not be "
                f"built.\n{type(err).__name__}: {err}")
        if error_file is None and self.extensions:
            error_file = os.path.join(
                os.path.dirname(self.get_ext_fullpath(self.extensions[0].name)), ERROR_FILE)
        if error_file is not None:
            try:
                os.makedirs(os.path.dirname(error_file), exist_ok=True)
                with open(error_file, "w", encoding="utf-8") as f:
                    f.write(text + "\n")
            except OSError:
                pass
        bar = "=" * 78
        if os.environ.get(REQUIRE_ENV) == "1":
            sys.stderr.write(f"\n{bar}\nERROR: {text}\n({REQUIRE_ENV}=1: failing the install.)\n"
                             f"{bar}\n\n")
            raise SystemExit(f"tfcompress kernels failed to build ({REQUIRE_ENV}=1)")
        sys.stderr.write(
            f"\n{bar}\nWARNING: {text}\n\nThe package works without them: runtime='tfcompress' "
            "reports them as unavailable and runtime='auto' uses LCE's interpreter. Fix the "
            f"error above (a C++17 compiler is needed) and reinstall; set {REQUIRE_ENV}=1 to "
            f"make this a hard error.\n{bar}\n\n")


setup(
    ext_modules=[
        Extension(
            "tfcompress._kernels._lce_kernels",
            sources=[f"tfcompress/_kernels/src/{name}" for name in SOURCES],
            depends=[f"tfcompress/_kernels/src/{name}" for name in HEADERS],
            language="c++",
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
