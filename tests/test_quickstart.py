"""End to end: train on real MNIST -> convert -> run in the real interpreters."""

import json
import os
from pathlib import Path

import pytest

from tfcompress import _kernels, quickstart
from tfcompress.runtime import inspect_flatbuffer


def test_small_end_to_end(tmp_path):
    rows = quickstart.run(tmp_path, epochs_float=1, epochs_binary=2, train_examples=6000,
                          test_examples=400, latency_runs=5, verbose=0, filters=(32, 64, 128, 128))
    kernels = _kernels.available()
    names = ["float32", "int8", "binary"] + (["binary (LCE)"] if kernels else [])
    assert [r["model"] for r in rows] == names
    for r in rows:
        assert (tmp_path / r["file"]).exists()
        assert r["agreement"] >= 0.98, r
        assert abs(r["keras_accuracy"] - r["tflite_accuracy"]) <= 0.02, r
        assert r["keras_accuracy"] > 0.5, r          # it learned something from real data
        assert 0 < r["latency_p10_ms"] <= r["latency_median_ms"] <= r["latency_p90_ms"], r
    by = {r["model"]: r for r in rows}
    # runtime="auto": the binary file runs in tfcompress's kernels when they are built, and
    # LCE's interpreter runs the same file in the extra row.
    assert by["binary"]["runtime"].startswith("tfcompress (" if kernels else "lce (")
    if kernels:
        assert by["binary (LCE)"]["runtime"] == "lce (indirect_bgemm)"
        assert by["binary (LCE)"]["file"] == by["binary"]["file"]
        assert by["binary (LCE)"]["keras_accuracy"] == by["binary"]["keras_accuracy"]
        assert abs(by["binary (LCE)"]["tflite_accuracy"] - by["binary"]["tflite_accuracy"]) <= 0.005
    lce = inspect_flatbuffer((tmp_path / by["binary"]["file"]).read_bytes())
    assert "LceBconv2d" in lce.custom_ops
    int8 = inspect_flatbuffer((tmp_path / by["int8"]["file"]).read_bytes())
    assert int8.inputs[0]["dtype"] == "int8" and int8.outputs[0]["dtype"] == "int8"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    assert saved["meta"]["test_examples"] == 400 and "cpu" in saved["meta"]
    md = (tmp_path / "results.md").read_text()
    assert "| binary |" in md and ("| binary (LCE) |" in md) == kernels
    # The acceptance figures are recorded (not asserted here: timing depends on the machine).
    checks = {c["check"].split(" >= ")[0]: c for c in saved["meta"]["checks"]}
    speed = next(c for k, c in checks.items() if k.startswith("int8 median latency"))
    assert speed["need"] == 1.0 and by["binary"]["runtime"] in speed["check"]
    assert speed["value"] == pytest.approx(
        by["int8"]["latency_median_ms"] / by["binary"]["latency_median_ms"], rel=1e-3)
    size = checks["float32 bytes / binary bytes"]
    assert size["value"] == pytest.approx(by["float32"]["size_bytes"] / by["binary"]["size_bytes"],
                                          rel=1e-3)
    for c in saved["meta"]["checks"]:
        verdict = "PASS" if c["value"] >= c["need"] else "FAIL"
        assert f"- {verdict}  {c['check']}: " in md


def _full_run(tmp_path):
    """The rows and output folder of a full default quickstart run.

    CI runs the README's main command (the full quickstart) just before the tests and points
    ``TFCOMPRESS_QUICKSTART_RESULTS`` at its ``results.json``: that run is checked here instead
    of training the same models a second time, provided it is a full default run of this very
    commit. Anywhere else the test runs the quickstart itself."""
    from tfcompress.report.tables import environment

    given = os.environ.get("TFCOMPRESS_QUICKSTART_RESULTS")
    if given:
        record = json.loads(Path(given).read_text())
        meta = record["meta"]
        assert meta["commit"] == environment()["commit"], (meta["commit"], "stale results")
        assert not meta["commit"].endswith("-dirty")
        assert (meta["train_examples"], meta["test_examples"]) == (60000, 10000), meta
        assert meta["epochs"] == {"float": 2, "binary": 5} and meta["seed"] == 0, meta
        return {r["model"]: r for r in record["rows"]}, Path(given).parent
    return {r["model"]: r for r in quickstart.run(tmp_path, verbose=0)}, tmp_path


@pytest.mark.slow
def test_full_quickstart_meets_acceptance(tmp_path):
    """The README's main job on the full MNIST splits (about 6 minutes on 2 cores)."""
    rows, out = _full_run(tmp_path)
    for r in rows.values():
        assert (out / r["file"]).is_file(), r
    assert rows["binary"]["keras_accuracy"] >= 0.975
    for r in rows.values():
        assert r["agreement"] >= 0.995, r
    assert rows["float32"]["size_bytes"] / rows["binary"]["size_bytes"] >= 20
    # "binary faster than int8 on this CPU" (issue 18) is a timing figure: it is recorded in
    # results.json meta.checks with PASS/FAIL (read it from a quiet machine), not asserted here.
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert any(c["check"].startswith("int8 median latency / binary") for c in meta["checks"])
