"""The user-facing contract: ConversionResult.to_c, the folder's contents, clear errors,
warning-free cross builds, sizes from compiled objects, the memory plan (streaming, in place)."""

import json
import subprocess

import numpy as np
import pytest

from codegen_fbuild import Builder, options
from codegen_helpers import run_both
from codegen_models import BUILTINS

from tfcompress.codegen import CodegenError, cortexm, generate
from tfcompress.codegen.planner import plan


def _streamable_model():
    """float conv 3x3 (VALID) -> max-pool 2x2 -> ReLU -> LceQuantize: the shape of a binarized
    network's real-valued first layer."""
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.tensor([1, 20, 20, 1], "float32", name="input")
    w = b.tensor([32, 3, 3, 1], "float32", rng.normal(0, 1, (32, 3, 3, 1)).astype(np.float32))
    bias = b.tensor([32], "float32", rng.normal(0, 1, 32).astype(np.float32))
    c = b.tensor([1, 18, 18, 32], "float32")
    p = b.tensor([1, 9, 9, 32], "float32")
    r = b.tensor([1, 9, 9, 32], "float32")
    q = b.tensor([1, 9, 9, 1], "int32")
    y = b.tensor([1, 9, 9, 32], "float32", name="output")
    b.op("CONV_2D", [x, w, bias], [c], options("Conv2DOptions", padding=1, strideW=1, strideH=1))
    b.op("MAX_POOL_2D", [c], [p], options("Pool2DOptions", padding=1, strideW=2, strideH=2,
                                           filterWidth=2, filterHeight=2))
    b.op("RELU", [p], [r])
    b.custom("LceQuantize", [r], [q])
    b.custom("LceDequantize", [q], [y])
    return b.finish([x], [y])


def test_to_c_contract(tmp_path):
    """ConversionResult.to_c -> a folder with <name>.h/.c + kernels; the CLibrary attributes."""
    from tfcompress.conversion.result import ConversionResult
    from tfcompress.runtime.flatbuffer import inspect_flatbuffer

    rng = np.random.default_rng(1)
    fb, shape = BUILTINS["CONV_2D"](rng, "int8")
    result = ConversionResult(flatbuffer=fb, target="int8", info=inspect_flatbuffer(fb))
    lib = result.to_c(tmp_path / "out", cpu="host", name="net")
    files = sorted(p.name for p in lib.path.iterdir())
    assert {"net.c", "net.h", "tfc_kernels.h", "tfc_float.c", "tfc_int8.c"} <= set(files)
    assert "tfc_binary.c" not in files  # only the kernels the model uses
    header = (lib.path / "net.h").read_text()
    assert "int tfc_net_invoke(const float *input, float *output);" in header
    assert f"#define NET_INPUT_SIZE {int(np.prod(shape))}" in header
    assert f"#define NET_ARENA_BYTES {lib.arena_bytes}" in header
    source = (lib.path / "net.c").read_text()
    assert "malloc" not in source and "static const int8_t" in source
    meta = json.loads((lib.path / "tfcompress_codegen.json").read_text())
    assert meta["ops"] == ["CONV_2D"]
    assert lib.flash_bytes >= lib.constant_bytes > 0
    assert lib.ram_bytes >= lib.arena_bytes + lib.stack_bytes > lib.arena_bytes
    x = rng.normal(0, 1, (4,) + shape[1:]).astype(np.float32)
    rep = lib.verify(x)
    assert rep.examples == 4 and rep.identical == 1.0
    # the float entry point (quantizes in C) gives what the raw one gives on quantized inputs
    host = lib.host()
    np.testing.assert_array_equal(lib.dequantize(host.run_raw(lib.quantize(x))), host.run_float(x))


def test_unsupported_op_is_named_before_writing(tmp_path):
    b = Builder()
    x = b.tensor([1, 4], "float32")
    y = b.tensor([1, 4], "float32")
    b.op("ABS", [x], [y])
    fb = b.finish([x], [y])
    with pytest.raises(CodegenError, match=r"operator #0 \(ABS\)"):
        generate(fb, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_bad_inputs_are_clear_errors(tmp_path):
    rng = np.random.default_rng(2)
    fb, shape = BUILTINS["RELU"](rng, "float32")
    lib = generate(fb, tmp_path / "m")
    with pytest.raises(ValueError, match="do not match the model input"):
        lib.verify(np.zeros((2, 99), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        lib.verify(np.full((1,) + shape[1:], np.nan, np.float32))
    with pytest.raises(ValueError, match="cpu must be one of"):
        generate(fb, tmp_path / "x", cpu="cortex-a53")
    with pytest.raises(ValueError, match="C identifier"):
        generate(fb, tmp_path / "x", name="my-model")
    with pytest.raises(CodegenError, match="TFL3"):
        generate(b"not a model", tmp_path / "x")


def test_streaming_first_layer_same_outputs_less_ram(tmp_path):
    fb = _streamable_model()
    x = np.random.default_rng(3).normal(0, 1, (3, 20, 20, 1)).astype(np.float32)
    whole, ref, lib_whole = run_both(fb, x, runtime="lce", stream=False)
    streamed, _, lib = run_both(fb, x, runtime="lce", stream="auto")
    assert any("->" in s for s in lib.meta["schedule"]), lib.meta["schedule"]
    assert lib.arena_bytes < lib_whole.arena_bytes / 3
    np.testing.assert_array_equal(streamed, whole)
    np.testing.assert_array_equal(streamed, ref)


def test_plan_places_live_tensors_apart_and_works_in_place():
    from tfcompress.codegen.emit import check_supported, fold_constants, lower
    from tfcompress.codegen.graph import read_graph
    from tfcompress.codegen.steps import Context

    graph = fold_constants(read_graph(_streamable_model()))
    check_supported(graph)
    steps = lower(graph, Context(graph, "t"))
    p = plan(graph, steps, stream=False)
    relu_out = next(t.index for t in graph.tensors if t.shape == (1, 9, 9, 32) and
                    graph.producer(t.index).op == "RELU")
    pool_out = graph.producer(relu_out).inputs[0]
    assert p.tensor_buffer[relu_out] is p.tensor_buffer[pool_out]  # ReLU in place
    for i, a in enumerate(p.buffers):
        for b in p.buffers[i + 1:]:
            if a.start <= b.end and b.start <= a.end:
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset


@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m7", "cortex-m33"])
def test_cross_compiles_warning_free(cpu, tmp_path):
    ok, why = cortexm.toolchain_available()
    if not ok:
        pytest.skip(why)
    fb = _streamable_model()
    lib = generate(fb, tmp_path / "m", cpu=cpu)
    for f in lib.c_files:
        r = subprocess.run(["arm-none-eabi-gcc", *cortexm.cpu_flags(cpu), "-std=c99", "-Wall",
                            "-Wextra", "-Werror", "-pedantic", "-Os", "-c", str(lib.path / f),
                            "-o", str(tmp_path / (f + ".o"))], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    sizes = lib.sizes()
    assert sizes["cpu"] == cpu and sizes["bss"] >= lib.arena_bytes and sizes["text"] > 0


def test_qemu_instruction_count_and_stack(tmp_path):
    ok, why = cortexm.toolchain_available()
    if not ok:
        pytest.skip(why)
    fb = _streamable_model()
    lib = generate(fb, tmp_path / "m", cpu="cortex-m4")
    x = np.random.default_rng(4).normal(0, 1, (2, 20, 20, 1)).astype(np.float32)
    res = lib.run_qemu(x, icount=True)
    assert abs(res.instructions_per_tick - 40.0) < 0.5  # 1 GHz icount clock / 25 MHz SysTick
    assert res.instructions.min() > 18 * 18 * 32 * 9  # at least one instruction per MAC
    # measured = the static call-graph bound + at most the SysTick exception frame that
    # interrupts it (26 words with the FPU context) and its handler
    assert lib.stack_bytes <= res.stack_bytes <= lib.stack_bytes + 128
    assert len(res.step_instructions) == len(lib.meta["schedule"])
    np.testing.assert_array_equal(res.outputs, lib.host().run_raw(x))


def test_float16_weights_are_folded(tmp_path):
    """A float16 file (weights stored as float16 + DEQUANTIZE) generates float32 C."""
    rng = np.random.default_rng(5)
    b = Builder()
    x = b.tensor([1, 6, 6, 3], "float32", name="input")
    w16 = b.tensor([4, 3, 3, 3], "float16", rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float16))
    w = b.tensor([4, 3, 3, 3], "float32")
    bias = b.tensor([4], "float32", rng.normal(0, 1, 4).astype(np.float32))
    y = b.tensor([1, 6, 6, 4], "float32", name="output")
    b.op("DEQUANTIZE", [w16], [w], version=3)
    b.op("CONV_2D", [x, w, bias], [y], options("Conv2DOptions", padding=0, strideW=1, strideH=1))
    fb = b.finish([x], [y])
    xs = rng.normal(0, 1, (2, 6, 6, 3)).astype(np.float32)
    ours, ref, lib = run_both(fb, xs, runtime="litert")
    assert lib.meta["ops"] == ["CONV_2D"]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("cpu", ["cortex-m7", "cortex-m33"])
def test_qemu_other_cores(cpu, tmp_path):
    """The same C on the Cortex-M7 (mps2-an500) and Cortex-M33 (mps2-an505) boards."""
    ok, why = cortexm.toolchain_available()
    if not ok:
        pytest.skip(why)
    lib = generate(_streamable_model(), tmp_path / "m", cpu=cpu)
    x = np.random.default_rng(6).normal(0, 1, (1, 20, 20, 1)).astype(np.float32)
    res = lib.run_qemu(x, icount=False)
    assert res.board == cortexm.BOARDS[cpu]
    np.testing.assert_array_equal(res.outputs, lib.host().run_raw(x))
