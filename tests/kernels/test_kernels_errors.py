"""Bad attributes, bad options and unavailable kernels give clear errors."""

import shutil

import flatbuffers
import numpy as np
import pytest
from flatbuffers import flexbuffers

from kernel_models import build, kernels_or_skip
from tfcompress.errors import InterpreterError

CFG = dict(h=8, w=8, cin=40, cout=16, k=3, stride=1, dilation=1, padding="same", pad_values=1)


def _with_options(fb, op_name, **changes):
    """The flatbuffer with ``changes`` applied to the custom options of every ``op_name``
    (a value of None deletes the key)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(fb, 0)
    codes = [c.customCode for c in model.operatorCodes]
    for op in model.subgraphs[0].operators:
        name = codes[op.opcodeIndex]
        if (name.decode() if isinstance(name, bytes) else name) == op_name:
            opts = flexbuffers.Loads(bytes(bytearray(op.customOptions)))
            for k, v in changes.items():
                if v is None:
                    opts.pop(k, None)
                else:
                    opts[k] = v
            op.customOptions = list(flexbuffers.Dumps(opts))
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize("changes, message", [
    (dict(pad_values=2), "pad_values"),
    (dict(padding=7), "padding"),
    (dict(stride_height=0), "stride_height"),
    (dict(channels_in=None), "required option 'channels_in' is missing"),
    (dict(channels_in=100), "channels_in=100 does not match"),
    (dict(fused_activation_function=9), "fused_activation_function"),
    (dict(dilation_width_factor="two"), "dilation_width_factor"),
])
def test_bad_bconv_attributes_are_reported(changes, message):
    kernels_or_skip()
    from tfcompress.runtime import Interpreter

    fb, _ = build(CFG, output="float")
    bad = _with_options(fb, "LceBconv2d", **changes)
    with pytest.raises(InterpreterError, match=message):
        Interpreter(bad, runtime="tfcompress")


def test_unchanged_options_roundtrip_still_runs():
    kernels_or_skip()
    from tfcompress.runtime import Interpreter

    fb, _ = build(CFG, output="float")
    same = _with_options(fb, "LceBconv2d")
    x = np.ones((1, 8, 8, 40), np.float32)
    np.testing.assert_array_equal(Interpreter(same, runtime="tfcompress").run(x),
                                  Interpreter(fb, runtime="tfcompress").run(x))


def test_unknown_isa_and_isa_for_other_runtime():
    kernels_or_skip()
    from tfcompress.runtime import Interpreter

    fb, _ = build(CFG, output="float")
    with pytest.raises(InterpreterError, match="Unknown ISA level 'sse9'"):
        Interpreter(fb, runtime="tfcompress", isa="sse9")
    with pytest.raises(ValueError, match="only applies to runtime='tfcompress'"):
        Interpreter(fb, runtime="lce", isa="avx2")


def test_env_var_forces_level(monkeypatch):
    kernels = kernels_or_skip()
    from tfcompress.runtime import Interpreter

    fb, _ = build(CFG, output="float")
    monkeypatch.setenv(kernels.ENV_ISA, "portable")
    assert Interpreter(fb, runtime="tfcompress").kernel == "portable"
    monkeypatch.setenv(kernels.ENV_ISA, "bogus")
    with pytest.raises(InterpreterError, match="bogus"):
        Interpreter(fb, runtime="tfcompress")


def test_unsupported_level_is_refused_by_the_library():
    kernels = kernels_or_skip()
    if kernels.best_isa() == "avx512":
        pytest.skip("this CPU supports every level")
    fb, _ = build(CFG, output="float")
    from tfcompress.runtime import Interpreter

    with pytest.raises(InterpreterError, match="not supported by this CPU"):
        Interpreter(fb, runtime="tfcompress", isa="avx512")


def test_unavailable_kernels_are_reported(monkeypatch):
    from tfcompress import _kernels
    from tfcompress.runtime import Interpreter

    fb, _ = build(CFG, output="float")
    monkeypatch.setitem(_kernels._cache, "lib", None)
    monkeypatch.setitem(_kernels._cache, "error", "no compiler at install time")
    with pytest.raises(InterpreterError, match="unavailable: no compiler at install time"):
        Interpreter(fb, runtime="tfcompress")


def test_litert_refuses_lce_ops_and_names_both_runtimes():
    from tfcompress.runtime import Interpreter

    fb, _ = build(CFG, output="float")
    with pytest.raises(InterpreterError, match="runtime='tfcompress'"):
        Interpreter(fb, runtime="litert")


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")),
                    reason="no C++ compiler: the optional extension is expected to be missing")
def test_kernels_are_built_where_a_compiler_exists():
    # The install never fails for a broken kernel build (it only warns); this test is what
    # makes CI notice one.
    from tfcompress import _kernels

    assert _kernels.available(), _kernels.unavailable_reason()
    assert _kernels.best_isa() in _kernels.ISA_LEVELS
