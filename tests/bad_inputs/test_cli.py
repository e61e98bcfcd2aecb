"""The ``tfcompress`` command as a user types it (issue 15 part 5, issue 18 part 1).

Real files, real subprocesses, the installed console script. Successes are checked against
the same computation done in Python (tfcompress.verify / Interpreter); failures must be one
line naming the cause plus a line with the way out, and no traceback without ``--debug``.
Each subprocess that imports TensorFlow costs seconds, so the converted files are shared by
session fixtures and the failure cases that can be caught before TensorFlow loads are.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tfcompress
from tfcompress import _kernels, cli
from tfcompress._keras import keras
from tfcompress.data import balanced_indices
from tfcompress.data.preprocess import for_model
from tfcompress.runtime import Interpreter

L = keras.layers
CHATTER = ("oneDNN", "cuInit", "cuda drivers", "absl::InitializeLog", "XNNPACK delegate",
           "cpu_feature_guard", "Failed to resize buffer")


def _command():
    script = Path(sys.executable).parent / "tfcompress"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tfcompress.cli"]


def tfc(*args, cwd, timeout=600, env=None):
    """Run ``tfcompress ARGS`` in ``cwd`` with the environment a user has (no TF log level)."""
    full = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    full.update(env or {})
    t0 = time.perf_counter()
    r = subprocess.run(_command() + [str(a) for a in args], cwd=cwd, env=full,
                       capture_output=True, text=True, timeout=timeout)
    r.seconds = time.perf_counter() - t0
    return r


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith("tfcompress ") and ": error: " in lines[0], lines
    assert lines[1].startswith("  way out: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines


def assert_quiet(r):
    for noise in CHATTER:
        assert noise not in r.stderr, (noise, r.stderr)


# ------------------------------------------------------------------------- shared files
@pytest.fixture(scope="session")
def work(tmp_path_factory, mnist):
    """A trained float MNIST CNN and a binary one (.keras), their .tflite files, a CIFAR-shaped
    .tflite, and the user's own data as .npz."""
    import larq as lq

    d = tmp_path_factory.mktemp("cli")
    (x, y), _ = mnist
    idx = balanced_indices(y, 3000)
    x, y = for_model("mnist", x[idx]), y[idx]
    keras.utils.set_random_seed(0)
    fm = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(8, 3, strides=2, activation="relu"),
                           L.Flatten(), L.Dense(10, activation="softmax")])
    fm.compile("adam", "sparse_categorical_crossentropy")
    fm.fit(x, y, epochs=1, verbose=0)
    fm.save(d / "float.keras")
    binary = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
    bm = keras.Sequential([
        keras.Input((28, 28, 1)), lq.layers.QuantConv2D(32, 3, **binary), L.MaxPool2D(2),
        L.BatchNormalization(), lq.layers.QuantConv2D(64, 3, input_quantizer="ste_sign", **binary),
        L.MaxPool2D(2), L.BatchNormalization(), L.GlobalAveragePooling2D(),
        L.Dense(10, activation="softmax")])
    bm.compile("adam", "sparse_categorical_crossentropy")
    bm.fit(x[:1000], y[:1000], epochs=1, verbose=0)
    (d / "bin.tflite").write_bytes(tfcompress.convert(bm, target="lce").flatbuffer)
    (d / "f32.tflite").write_bytes(tfcompress.convert(fm, target="float32").flatbuffer)
    cm = keras.Sequential([keras.Input((32, 32, 3)), L.Conv2D(4, 3), L.Flatten(), L.Dense(10)])
    (d / "cifar.tflite").write_bytes(tfcompress.convert(cm, target="float32").flatbuffer)
    np.savez(d / "mine.npz", x=x[:300], y=y[:300])
    (d / "notes.txt").write_text("not a model")
    return {"dir": d, "float": fm, "x": x, "y": y}


@pytest.fixture(scope="session")
def converted(work):
    """``tfcompress convert float.keras --target int8 --data mnist -o int8.tflite``."""
    return tfc("convert", "float.keras", "--target", "int8", "--data", "mnist",
               "-o", "out/int8.tflite", cwd=work["dir"])


# ------------------------------------------------------------- start-up, help, parser
def test_help_answers_before_tensorflow_loads(work):
    r = tfc("--help", cwd=work["dir"])
    assert r.returncode == 0 and r.stderr == ""
    for cmd in ("quickstart", "doctor", "convert", "verify", "benchmark", "summary"):
        assert cmd in r.stdout
    print(f"tfcompress --help: {r.seconds:.2f} s wall (load average {os.getloadavg()[0]:.1f})")
    r = tfc("benchmark", "--help", cwd=work["dir"])
    assert r.returncode == 0 and "--runtime" in r.stdout and "--profile" in r.stdout
    # The cause of a slow --help was TensorFlow's import: the help path never imports it.
    for argv in (["--help"], ["verify", "--help"], ["convert", "nope.keras", "--target",
                                                    "float32", "-o", "x.tflite"]):
        p = subprocess.run([sys.executable, "-X", "importtime", "-m", "tfcompress.cli", *argv],
                           cwd=work["dir"], capture_output=True, text=True, timeout=120)
        imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "tfcompress.cli" in imported or "tfcompress._command" in imported, p.stderr[-500:]
        assert not {"tensorflow", "numpy"} & imported, (argv, sorted(imported)[:50])


def test_every_option_has_help_text():
    parser = cli.build_parser()
    import argparse

    commands = next(a for a in parser._actions
                    if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"quickstart", "doctor", "convert", "verify", "benchmark", "summary"}
    for name, sub in [("tfcompress", parser)] + list(commands.items()):
        for action in sub._actions:
            if action.dest in ("help", "command"):
                continue
            assert action.help and len(action.help) > 10, (name, action.dest)


def test_literal_lists_match_the_package():
    from tfcompress.conversion import checks
    from tfcompress.runtime import RUNTIMES

    assert cli.TARGETS == checks.TARGETS
    assert cli.CALIBRATED_TARGETS == checks.NEEDS_CALIBRATION
    assert set(cli.RUNTIMES) == set(RUNTIMES)
    assert cli.DATASETS == tfcompress.data.DATASETS
    assert cli.ISAS == ("auto",) + _kernels.ISA_LEVELS
    for name, shape in cli.DATASET_SHAPES.items():
        _, (xt, _) = tfcompress.data.load(name)
        assert for_model(name, xt[:1]).shape[1:] == shape, name


def test_quiet_stderr_drops_only_known_chatter(capfd):
    noise = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        b"I0000 00:00:1796035064.272239    9881 port.cc:153] oneDNN custom operations are on.\n",
        b"E0000 00:00:1796035089.753154   10196 cuda_platform.cc:52] failed call to cuInit: "
        b"INTERNAL: CUDA error\n",
        b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
        b"Failed to resize buffer. Requested: 2720, available 1088, missing: 1632\r\n",
    ]
    keep = [b"E0000 00:00:1.2   10 foo.cc:1] a real error\n", b"progress 10%\r",
            b"progress 20%\r", b"plain message\n", b"partial line without newline"]
    quiet = cli.quiet.QuietStderr()
    try:
        for chunk in (noise[0], keep[0], noise[1][:20], noise[1][20:], keep[1], noise[2],
                      keep[2], noise[3], noise[4][:-1], noise[4][-1:], keep[3], keep[4]):
            os.write(2, chunk)
    finally:
        quiet.stop()
    err = capfd.readouterr().err
    assert err == b"".join(keep).decode(), err


# ------------------------------------------------------------------------------ convert
def test_convert_success(converted, work):
    r = converted
    assert r.returncode == 0, r.stderr
    assert_quiet(r)
    path = work["dir"] / "out" / "int8.tflite"
    assert re.search(rf"wrote out/int8.tflite \({path.stat().st_size:,} bytes, target int8\); "
                     r"runs in litert", r.stdout), r.stdout
    assert "ops: CONV_2D x1, FULLY_CONNECTED x1" in r.stdout
    it = Interpreter(path)
    assert it.inputs[0]["dtype"] == "int8" and it.inputs[0]["shape"] == (1, 28, 28, 1)


def test_convert_emits_c_for_a_microcontroller(work):
    r = tfc("convert", "float.keras", "--target", "micro", "--data", "mine.npz", "-o",
            "mcu/m.tflite", "--emit-c", "mcu/c", "--cpu", "cortex-m4", cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    assert_quiet(r)
    assert "wrote C sources to mcu/c" in r.stdout
    written = sorted(p.name for p in (work["dir"] / "mcu" / "c").iterdir())
    assert any(n.endswith(".c") for n in written) and any(n.endswith(".h") for n in written)


@pytest.mark.parametrize("args, needles", [
    (["nope.keras", "--target", "float32", "-o", "x.tflite"], ["nope.keras", "does not exist"]),
    (["float.keras", "--target", "int8", "-o", "x.tflite"], ["--target int8", "calibration"]),
    (["float.keras", "--target", "lce", "-o", "x.tflite", "--cpu", "cortex-m4"], ["--cpu"]),
    (["float.keras", "--target", "int8", "-o", "x.tflite", "--data", "imagenet"], ["imagenet"]),
])
def test_convert_failures_are_one_line(work, args, needles):
    r = tfc("convert", *args, cwd=work["dir"])
    assert_one_line_error(r, *needles)
    assert not (work["dir"] / "x.tflite").exists()


def test_keras3_environment_is_one_line(work):
    r = tfc("verify", "f32.tflite", "--data", "mnist", cwd=work["dir"],
            env={"TF_USE_LEGACY_KERAS": "0"})
    assert_one_line_error(r, "TF_USE_LEGACY_KERAS='0' selects Keras 3", "TF_USE_LEGACY_KERAS=1")


def test_debug_shows_the_traceback(work):
    r = tfc("--debug", "convert", "nope.keras", "--target", "float32", "-o", "x.tflite",
            cwd=work["dir"])
    assert r.returncode != 0 and "Traceback" in r.stderr and "does not exist" in r.stderr


def test_usage_errors_name_the_option(work):
    r = tfc("verify", "f32.tflite", cwd=work["dir"])
    assert r.returncode == 2 and "--data" in r.stderr and "required" in r.stderr
    r = tfc("benchmark", "f32.tflite", "--runs", "0", cwd=work["dir"])
    assert r.returncode == 2 and "--runs" in r.stderr and "positive integer" in r.stderr


# ------------------------------------------------------------------------------- verify
def test_verify_builtin_data_class_balanced_limit(converted, work):
    assert converted.returncode == 0, converted.stderr
    r = tfc("verify", "float.keras", "out/int8.tflite", "--data", "mnist", "--limit", "200",
            "--latency-runs", "5", cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    assert_quiet(r)
    assert ("data: mnist test split, 200 of 10000 examples (class-balanced: 20 of each of 10 "
            "classes)") in r.stdout
    # The same run in Python, on the same (documented) subset.
    _, (xt, yt) = tfcompress.data.load("mnist")
    idx = balanced_indices(yt, 200)
    ref = tfcompress.verify(work["dir"] / "out" / "int8.tflite", for_model("mnist", xt[idx]),
                            yt[idx], keras_model=work["float"], latency_runs=0)
    line = r.stdout.splitlines()[1]
    assert line.startswith("litert (default) on 200 examples: ")
    assert f"accuracy {100 * ref.accuracy:.2f}%" in line
    assert f"Keras {100 * ref.keras_accuracy:.2f}%" in line
    assert f"agreement {100 * ref.agreement:.2f}%" in line and ref.agreement >= 0.9


def test_verify_own_npz_in_the_tfcompress_runtime(work):
    runtime, isa = ("tfcompress", "portable") if _kernels.available() else ("lce", None)
    args = ["verify", "bin.tflite", "--data", "mine.npz", "--runtime", runtime, "--threads", "2",
            "--latency-runs", "3", "--json"] + (["--isa", isa] if isa else [])
    r = tfc(*args, cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["runtime"] == runtime and rep["examples"] == 300
    assert rep["data"] == "mine.npz, all 300 examples"
    assert rep["latency"]["threads"] == 2 and (isa is None or rep["kernel"] == isa)
    ref = Interpreter(work["dir"] / "bin.tflite", runtime="lce", lce_kernel="reference")
    expected = float((ref.predict(work["x"][:300]).argmax(-1) == work["y"][:300]).mean())
    assert rep["accuracy"] == pytest.approx(expected, abs=1 / 300 + 1e-9)


def test_verify_cifar_file_with_mnist_data_is_one_line(work):
    r = tfc("verify", "cifar.tflite", "--data", "mnist", cwd=work["dir"])
    lines = assert_one_line_error(r, "(32, 32, 3)", "--data mnist", "(28, 28, 1)")
    assert "file.npz" in lines[1]
    assert_quiet(r)


@pytest.mark.parametrize("args, needles", [
    (["nope.tflite", "--data", "mnist"], ["nope.tflite", "does not exist"]),
    (["f32.tflite", "--data", "mnist.csv"], ["mnist.csv", "neither a built-in dataset"]),
    (["f32.tflite", "--data", "missing.npz"], ["missing.npz", "does not exist"]),
    (["notes.txt", "--data", "mnist"], ["notes.txt", ".tflite"]),
])
def test_verify_fast_failures(work, args, needles):
    assert_one_line_error(tfc("verify", *args, cwd=work["dir"]), *needles)


# ---------------------------------------------------------------------------- benchmark
def _table(stdout):
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"(\S+)\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+(\S+)$", line)
        if m:
            rows[m.group(1)] = dict(kernel=m.group(2), median=float(m.group(3)),
                                    p10=float(m.group(4)), p90=float(m.group(5)),
                                    ratio=float(m.group(6)), diff=m.group(7))
    return rows


def test_benchmark_every_runtime_of_an_lce_file(work):
    r = tfc("benchmark", "bin.tflite", "--runs", "30", "--warmup", "5", cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    assert_quiet(r)
    assert "median ms" in r.stdout and "p10 ms" in r.stdout and "p90 ms" in r.stdout
    rows = _table(r.stdout)
    want = {"tfcompress", "lce"} if _kernels.available() else {"lce"}
    assert set(rows) == want, r.stdout
    for row in rows.values():
        assert 0 < row["p10"] <= row["median"] <= row["p90"], row
    assert min(row["ratio"] for row in rows.values()) == 1.0
    if _kernels.available():
        assert rows["tfcompress"]["kernel"] == _kernels.best_isa()
        assert float(rows["lce"]["diff"]) < 1e-4       # the same outputs in both runtimes
    else:
        assert "skipped tfcompress: kernels not built" in r.stdout


def test_benchmark_named_runtimes_as_json(work):
    r = tfc("benchmark", "f32.tflite", "--runtime", "litert", "--runtime", "micro",
            "--runs", "20", "--warmup", "2", "--data", "mine.npz", "--json", cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert [row["runtime"] for row in rec["rows"]] == ["litert", "micro"]
    assert rec["meta"]["input"] == "the first example of mine.npz"
    assert rec["meta"]["runs"] == 20 and rec["meta"]["inputs"][0]["shape"] == [1, 28, 28, 1]
    for row in rec["rows"]:
        assert row["runs"] == 20 and row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
    assert rec["rows"][1]["max_abs_diff_vs_first"] < 1e-5


def test_benchmark_profile(work):
    r = tfc("benchmark", "bin.tflite", "--runs", "10", "--profile", cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    rows = _table(r.stdout)
    assert r.stdout.count("\nprofile: ") == len(rows) >= 1
    for label, section in zip(rows, r.stdout.split("\nprofile: ")[1:]):
        assert section.startswith(label) and "op type" in section, section
        assert re.search(r"^LceBconv2d\s+1\s+[\d.]+\s+[\d.]+%", section, re.M), section


@pytest.mark.parametrize("args, needles", [
    (["bin.tflite", "--runtime", "micro"], ["--runtime micro cannot run bin.tflite"]),
    (["nope.tflite"], ["nope.tflite", "does not exist"]),
])
def test_benchmark_failures_are_one_line(work, args, needles):
    assert_one_line_error(tfc("benchmark", *args, cwd=work["dir"]), *needles)


# ------------------------------------------------------------------------------ summary
def test_summary_success_and_failure(work):
    r = tfc("summary", "float.keras", cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    assert_quiet(r)
    assert re.search(r"^conv2d\s+Conv2D\s+\(None, 13, 13, 8\)\s+80\s", r.stdout, re.M), r.stdout
    assert f"{work['float'].count_params():,}" in r.stdout
    assert_one_line_error(tfc("summary", "nope.keras", cwd=work["dir"]), "does not exist")


# ------------------------------------------------------------------------------- doctor
def test_doctor_without_data_fails_and_says_so(work, tmp_path):
    r = tfc("doctor", "--require-data", cwd=work["dir"],
            env={"TFCOMPRESS_DATA": str(tmp_path), "TFCOMPRESS_CACHE": str(tmp_path / "c")})
    assert r.returncode == 1, r.stderr
    assert_quiet(r)
    lines = r.stdout.splitlines()
    for name in ("ai-edge-litert runs int8 TFLite", "LCE interpreter runs LCE models",
                 "tflite-micro runs int8 models", "Keras 2 (tf_keras) active"):
        assert any(line.startswith("OK") and name in line for line in lines), (name, r.stdout)
    auto = next(line for line in lines if "runtime='auto' for LCE files" in line)
    assert ("tfcompress kernels" if _kernels.available() else "LCE's interpreter") in auto
    assert any(line.startswith("FAIL") and "data: mnist" in line for line in lines)
    assert lines[-1].startswith("3 check(s) failed: data: mnist, data: cifar10, data: fsdd")
