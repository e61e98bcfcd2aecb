"""Issue 15 part 2-3: the kernels refuse what they cannot run safely, the loader refuses an
untested ai-edge-litert, a failed build is reported, and the sanitizer fuzz finds nothing.

Models come from :mod:`tfcompress._kernels.testing` (written directly, no converter), so each
case changes exactly one thing of a model that otherwise runs and matches LCE."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kernel_models import kernels_or_skip
from tfcompress.errors import InterpreterError

ROOT = Path(__file__).resolve().parents[2]
SPEC = dict(n=1, h=6, w=7, cin=40, cout=20, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, padding="same",
            pad_values=1, activation=0, input="float", output="float", depth=1)


def _model(**changes):
    from tfcompress._kernels.testing import lce_conv_model

    fb, shape, _ = lce_conv_model(dict(SPEC, **changes), seed=3)
    return fb, shape


def _edit(fb, fn):
    """Apply ``fn(model_t)`` to the flatbuffer's object tree and repack it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(fb, 0)
    fn(model)
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _bconv(model):
    codes = [c.customCode for c in model.operatorCodes]
    return next(op for op in model.subgraphs[0].operators
                if codes[op.opcodeIndex] == b"LceBconv2d")


def _refused(fb, match):
    from tfcompress.runtime import Interpreter

    with pytest.raises(InterpreterError, match=match):
        it = Interpreter(fb, runtime="tfcompress")
        it.run(np.zeros(it.inputs[0]["shape"], np.float32))


def test_builder_model_matches_lce():
    kernels_or_skip()
    from tfcompress.runtime import Interpreter

    fb, shape = _model()
    x = np.random.default_rng(0).normal(0, 2, shape).astype(np.float32)
    ref = Interpreter(fb, runtime="lce", lce_kernel="reference").run(x)
    ours = Interpreter(fb, runtime="tfcompress").run(x)
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


def test_missing_optional_multiplier_is_refused():
    # float output needs the multiplier (input 2); -1 there used to be dereferenced
    kernels_or_skip()
    fb, _ = _model()

    def drop(model):
        op = _bconv(model)
        op.inputs = list(op.inputs)
        op.inputs[2] = -1

    _refused(_edit(fb, drop), "float32 output needs float32 post_activation_multiplier")


def test_required_filter_index_minus_one_is_refused():
    kernels_or_skip()
    fb, _ = _model()

    def drop(model):
        op = _bconv(model)
        op.inputs = list(op.inputs)
        op.inputs[1] = -1

    _refused(_edit(fb, drop), r"input 1 has tensor index -1 \(valid: 0\.\.")


def test_output_that_is_also_an_input_is_refused():
    kernels_or_skip()
    fb, _ = _model()

    def alias(model):
        op = _bconv(model)
        op.outputs = [int(op.inputs[0])]

    with pytest.raises(InterpreterError):
        from tfcompress.runtime import Interpreter

        Interpreter(_edit(fb, alias), runtime="tfcompress")


@pytest.mark.parametrize("dims", [[20, 0, 3, 2], [20, 3, 3]])
def test_filter_without_height_or_rank_is_refused(dims):
    kernels_or_skip()
    fb, _ = _model()

    def reshape(model):
        t = model.subgraphs[0].tensors[int(_bconv(model).inputs[1])]
        t.shape = np.asarray(dims, np.int32)

    _refused(_edit(fb, reshape), "filter")


@pytest.mark.parametrize("value, message", [
    (float("nan"), "'stride_height' is not an integer"),
    (float("inf"), "'stride_height' is not an integer"),
    (1e300, "'stride_height' is not an integer"),
    (2.5, "'stride_height' is not an integer"),
    (2 ** 40, r"'stride_height' = 1099511627776 is out of range \[1, 4096\]"),
])
def test_float_and_huge_attributes_are_refused(value, message):
    # NaN / inf / 1e300 cast to int64 is undefined behaviour: the reader checks first
    kernels_or_skip()
    import struct

    from flatbuffers import flexbuffers

    fb, _ = _model()

    def set_stride(model):
        op = _bconv(model)
        opts = flexbuffers.Loads(bytes(bytearray(op.customOptions)))
        fbb = flexbuffers.Builder()
        with fbb.Map():
            for key, v in opts.items():
                fbb.Key(key)
                v = value if key == "stride_height" else v
                if isinstance(v, float):
                    try:
                        fits = struct.unpack("<f", struct.pack("<f", v))[0] == v
                    except OverflowError:
                        fits = False
                    fbb.Float(v, byte_width=4 if fits else 8)
                else:
                    fbb.Int(v)
        op.customOptions = list(fbb.Finish())

    _refused(_edit(fb, set_stride), message)


@pytest.mark.parametrize("cut", [0, 1, 7, 40])
def test_truncated_options_are_refused(cut):
    kernels_or_skip()
    fb, _ = _model()

    def truncate(model):
        op = _bconv(model)
        op.customOptions = list(bytearray(op.customOptions)[:cut]) or None

    _refused(_edit(fb, truncate), "not a FlexBuffers map")


def test_inconsistent_channels_in_is_refused():
    # channels_in must be what the producer (LceQuantize of 40 channels) packed
    kernels_or_skip()
    from flatbuffers import flexbuffers

    fb, _ = _model()

    def set_channels(model):
        op = _bconv(model)
        opts = flexbuffers.Loads(bytes(bytearray(op.customOptions)))
        opts["channels_in"] = 33  # still 2 words
        op.customOptions = list(flexbuffers.Dumps(opts))

    _refused(_edit(fb, set_channels), "channels_in=33, but the op that writes the input packs 40")


def test_untested_litert_is_refused_unless_opted_in(monkeypatch):
    kernels = kernels_or_skip()
    from tfcompress.runtime import Interpreter

    fb, shape = _model()
    monkeypatch.setattr(kernels, "litert_version", lambda: "9.9.9")
    monkeypatch.delenv(kernels.ENV_ALLOW_UNTESTED, raising=False)
    assert not kernels.available()
    reason = kernels.unavailable_reason()
    assert "ai-edge-litert 9.9.9" in reason and "runtime='lce'" in reason
    assert kernels.ENV_ALLOW_UNTESTED in reason
    with pytest.raises(InterpreterError, match="runtime='lce'"):
        Interpreter(fb, runtime="tfcompress")
    with pytest.raises(InterpreterError, match="9.9.9"):
        kernels.delegate()
    monkeypatch.setenv(kernels.ENV_ALLOW_UNTESTED, "1")
    assert kernels.available()
    out = Interpreter(fb, runtime="tfcompress").run(np.ones(shape, np.float32))
    assert out.shape == (1, 6, 7, 20)


def test_build_error_record_is_reported(monkeypatch, tmp_path):
    kernels = kernels_or_skip()
    record = tmp_path / kernels.BUILD_ERROR_FILE
    record.write_text("tfcompress's C++ kernels could not be built.\nerror: boom.cc:1: oops\n")
    monkeypatch.setattr(kernels, "_HERE", tmp_path)
    monkeypatch.delenv(kernels.ENV_LIBRARY, raising=False)
    monkeypatch.setattr(kernels, "_cache", {})
    assert not kernels.available()
    reason = kernels.unavailable_reason()
    assert "was not built" in reason and "boom.cc:1: oops" in reason


def _setup_py(tmp_path, env_extra):
    env = dict(os.environ, TFCOMPRESS_KERNELS_CFLAGS="-include /nonexistent/tfc_header.h")
    env.pop("TFCOMPRESS_REQUIRE_KERNELS", None)  # CI sets it; each test chooses
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "tmp")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="no C++ compiler")
def test_failed_compile_is_shown_and_recorded(tmp_path):
    proc = _setup_py(tmp_path, {})
    assert proc.returncode == 0, proc.stderr[-2000:]     # optional: the install goes on
    assert "WARNING: tfcompress's C++ kernels" in proc.stderr
    assert "/nonexistent/tfc_header.h" in proc.stderr   # the compiler's own message
    record = tmp_path / "lib" / "tfcompress" / "_kernels" / "BUILD_ERROR.txt"
    assert "/nonexistent/tfc_header.h" in record.read_text()


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="no C++ compiler")
def test_required_kernels_fail_the_build(tmp_path):
    proc = _setup_py(tmp_path, {"TFCOMPRESS_REQUIRE_KERNELS": "1"})
    assert proc.returncode != 0
    assert "/nonexistent/tfc_header.h" in proc.stderr
    assert "TFCOMPRESS_REQUIRE_KERNELS=1" in proc.stderr


def _sanitizers_available():
    cxx = shutil.which("g++")
    if cxx is None:
        return False
    out = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True)
    return os.path.isabs(out.stdout.strip())


@pytest.mark.slow
@pytest.mark.skipif(not _sanitizers_available(), reason="needs g++ with libasan/libubsan")
def test_sanitizer_fuzz_finds_nothing(tmp_path):
    """The ASan+UBSan build on 150 random valid models and 1,800 mutations: every model runs
    and matches LCE or is refused with a message; no crash, no sanitizer report."""
    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, "tools/fuzz_kernels.py", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.is_file(), proc.stderr[-3000:]
    counts = json.loads(out.read_text())
    assert proc.returncode == 0, (counts.get("failures_detail"), proc.stderr[-3000:])
    assert counts["crashes"] == 0 and counts["sanitizer_reports"] == 0
    assert counts["failures"] == 0
    assert counts["models"] == 150 and counts["mutations"] == 1800
    # every unmutated model ran and matched; many mutations ran too, most were refused
    assert counts["ran_and_matched"] >= 150
    assert counts["refused_by_tfcompress"] >= 500
