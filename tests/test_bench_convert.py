"""tools/bench_convert.py: the --quick smoke run writes a row per target; acceptance logic."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "bench_convert.py"
TARGETS = ["float32", "float16", "dynamic", "int8", "int16x8", "micro", "edgetpu"]


def _load_script():
    spec = importlib.util.spec_from_file_location("bench_convert", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_a_row_per_target(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = (out / "convert.md").read_text()
    record = json.loads((out / "convert.json").read_text())
    rows = record["rows"]
    from tfcompress import _kernels

    ours = _kernels.available()   # the LCE file also runs in tfcompress's kernels when built
    assert [r["target"] for r in rows] == TARGETS + ["lce"] * (3 if ours else 2)
    assert [r["runtime"] for r in rows[-2:]] == ["lce (indirect_bgemm)", "lce (default)"]
    if ours:
        assert rows[-3]["runtime"] == f"tfcompress ({_kernels.best_isa()})"
    for r in rows:
        assert f"| {r['target']} | {r['runtime']} |" in md
        assert 0 <= r["tflite_accuracy"] <= 1 and r["agreement"] >= 0.9, r
        assert r["latency_median_ms"] > 0 and r["size_bytes"] > 0, r
    by = {r["target"]: r for r in rows}
    assert by["float32"]["size_ratio_vs_float32"] == 1.0
    assert by["int8"]["size_bytes"] < 0.5 * by["float32"]["size_bytes"]
    assert by["lce"]["size_bytes"] < by["int8"]["size_bytes"]
    assert "LceBconv2d" in by["lce"]["custom_ops"]
    assert "arena" in by["micro"]["notes"] and "ops mapped" in by["edgetpu"]["notes"]
    meta = record["meta"]
    assert meta["test_examples"] == 300 and meta["train_examples"] == 3000
    assert {"commit", "cpu", "cores", "versions", "seed", "wall_seconds"} <= set(meta)
    assert [c["check"] for c in meta["acceptance"]] == [
        "int8 accuracy within 0.5 pt of Keras", "LCE agreement with Keras >= 99.9%"]
    for c in meta["acceptance"]:
        assert f"- {c['result']}: {c['check']}" in md


def test_acceptance_checks_follow_the_numbers():
    acceptance = _load_script().acceptance
    rows = [
        {"target": "int8", "keras_accuracy": 0.9900, "tflite_accuracy": 0.9860},
        {"target": "lce", "runtime": "lce (indirect_bgemm)", "agreement": 0.9995},
        {"target": "lce", "runtime": "lce (default)", "agreement": 0.9990},
    ]
    assert [c["passed"] for c in acceptance(rows)] == [True, True]
    rows[0]["tflite_accuracy"] = 0.9849                  # 0.51 pt below Keras
    rows[2]["agreement"] = 0.9989
    checks = acceptance(rows)
    assert [c["passed"] for c in checks] == [False, False]
    assert "-0.51 pt" in checks[0]["detail"] and "99.89%" in checks[1]["detail"]
    missing = acceptance([{"target": "float32"}])
    assert [c["passed"] for c in missing] == [False, False]


@pytest.mark.parametrize("argv", [["--latency-runs", "0"], ["--bogus"]])
def test_bad_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as err:
        _load_script().parse_args(argv)
    assert err.value.code == 2
