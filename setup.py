"""Build script: metadata lives in setup.cfg; this adds the optional C++ kernel extension.

``tfcompress/_kernels/_lce_kernels`` (tfcompress's LCE-op kernels for ai-edge-litert) needs only
a C++17 compiler and the Python headers; no TensorFlow/LiteRT headers (see
``tfcompress/_kernels/src/tflite_abi.h``). If it cannot be compiled, the install goes on
without it and prints a warning: ``tfcompress doctor`` and ``runtime="tfcompress"`` then
report the kernels as unavailable. Set ``TFCOMPRESS_REQUIRE_KERNELS=1`` to make a failed
compile fail the install instead.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = ["avx2.cc", "avx512.cc", "bconv2d.cc", "delegate.cc", "module.cc", "ops.cc",
           "portable.cc", "threadpool.cc"]


class OptionalBuildExt(build_ext):
    """Compile the kernels if possible; never let them break the install."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        for ext in self.extensions:
            if ctype == "msvc":
                ext.extra_compile_args = ["/O2", "/std:c++17", "/EHsc"]
            else:
                ext.extra_compile_args = ["-O3", "-std=c++17", "-fvisibility=hidden", "-pthread",
                                          "-Wno-uninitialized", "-Wno-maybe-uninitialized"]
                ext.extra_link_args = ["-pthread"]
        super().build_extensions()

    def run(self):
        try:
            super().run()
        except Exception as err:  # compiler missing: distutils raises several error types
            self._warn(err)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as err:
            self._warn(err)

    @staticmethod
    def _warn(err):
        if os.environ.get("TFCOMPRESS_REQUIRE_KERNELS") == "1":
            raise err
        sys.stderr.write(
            "\nWARNING: tfcompress's C++ kernels (tfcompress._kernels._lce_kernels) could not be "
            f"built: {err}\nThe package works without them; runtime='tfcompress' will report "
            "them as unavailable. Install a C++17 compiler and reinstall to get them.\n\n"
        )


setup(
    ext_modules=[
        Extension(
            "tfcompress._kernels._lce_kernels",
            sources=[f"tfcompress/_kernels/src/{name}" for name in SOURCES],
            depends=[f"tfcompress/_kernels/src/{name}" for name in
                     ("flexbuffers_lite.h", "kernels.h", "op_util.h", "ops.h", "threadpool.h",
                      "tflite_abi.h")],
            language="c++",
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
