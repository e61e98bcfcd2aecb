"""Shared pieces of the code-generation tests: run a flatbuffer through the generated C (host
build) and through the reference interpreter on the same raw inputs, and random quantization."""

import itertools
import tempfile
from pathlib import Path

import numpy as np

from tfcompress.codegen import generate
from tfcompress.codegen.reference import Reference

_COUNTER = itertools.count()
_ROOT = Path(tempfile.mkdtemp(prefix="tfc-codegen-tests-"))


def outdir():
    return _ROOT / f"m{next(_COUNTER)}"


def run_both(fb, x_raw, *, cmsis_nn=False, runtime=None, lce_kernel="reference", **gen):
    """(ours, reference, lib): raw outputs of the host build and of the reference interpreter."""
    lib = generate(fb, outdir(), **gen)
    ours = lib.host(cmsis_nn=cmsis_nn).run_raw(x_raw)
    ref = Reference(fb, runtime=runtime, lce_kernel=lce_kernel).run_raw(x_raw).reshape(ours.shape)
    return ours, ref, lib


def assert_close(ours, ref, rtol=1e-5, what=""):
    """Float outputs: |ours - ref| <= rtol * max|ref| (summation order is the reference's, so the
    difference is a few ulp, from exp/tanh written without libm)."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    err = float(np.max(np.abs(ours - ref))) / scale
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol} (max |ref| {scale:.3g})"


def int8_tensor_q(rng):
    """A random int8 activation quantization (scale, zero point)."""
    return float(rng.uniform(0.01, 0.1)), int(rng.integers(-20, 21))


def rand_int8(rng, shape):
    return rng.integers(-128, 128, size=shape).astype(np.int8)
