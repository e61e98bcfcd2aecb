"""End to end: train on real MNIST -> convert -> run in the real interpreters."""

import json

import pytest

from tfcompress import quickstart
from tfcompress.runtime import inspect_flatbuffer


def test_small_end_to_end(tmp_path):
    rows = quickstart.run(tmp_path, epochs_float=1, epochs_binary=2, train_examples=6000,
                          test_examples=400, latency_runs=5, verbose=0, filters=(32, 64, 128, 128))
    assert [r["model"] for r in rows] == ["float32", "int8", "binary (LCE)"]
    for r in rows:
        assert (tmp_path / r["file"]).exists()
        assert r["agreement"] >= 0.98, r
        assert abs(r["keras_accuracy"] - r["tflite_accuracy"]) <= 0.02, r
        assert r["keras_accuracy"] > 0.5, r          # it learned something from real data
    lce = inspect_flatbuffer((tmp_path / rows[2]["file"]).read_bytes())
    assert "LceBconv2d" in lce.custom_ops
    int8 = inspect_flatbuffer((tmp_path / rows[1]["file"]).read_bytes())
    assert int8.inputs[0]["dtype"] == "int8" and int8.outputs[0]["dtype"] == "int8"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    assert saved["meta"]["test_examples"] == 400 and "cpu" in saved["meta"]
    assert "| binary (LCE) |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_full_quickstart_meets_acceptance(tmp_path):
    """The README's main job on the full MNIST splits (about 6 minutes on 2 cores)."""
    rows = {r["model"]: r for r in quickstart.run(tmp_path, verbose=0)}
    assert rows["binary (LCE)"]["keras_accuracy"] >= 0.975
    for r in rows.values():
        assert r["agreement"] >= 0.995, r
    assert rows["float32"]["size_bytes"] / rows["binary (LCE)"]["size_bytes"] >= 20
