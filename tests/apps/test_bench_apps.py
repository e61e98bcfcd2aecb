import json

import pytest


@pytest.mark.slow
def test_bench_apps_quick_runs(tmp_path, run_script):
    run_script("tools/bench_apps.py", "--quick", "--out-dir", str(tmp_path), timeout=1500)
    data = json.loads((tmp_path / "apps.json").read_text())
    models = [row["model"] for row in data["rows"]]
    assert models[:3] == ["WaveNet float32", "WaveNet Bi-Real", "WaveNet PCNN"]
    assert [m for m in models if "Q-YOLO" in m] == [
        "TinyYOLO int8 Q-YOLO UH", "TinyYOLO int8 Q-YOLO min/max", "TinyYOLO int8 Q-YOLO percentile 99.99"]
    assert sum(row["application"] == "CIFAR-10" for row in data["rows"]) == 3
    for row in data["rows"]:
        assert 0.0 <= row["tflite_metric"] <= 1.0 and row["size_bytes"] > 0
        assert row["latency_median_ms"] > 0
        if ("lce" in row["runtime"] or "tfcompress" in row["runtime"]) and row.get("agreement") is not None:
            assert row["agreement"] >= 0.95
    md = (tmp_path / "apps.md").read_text()
    assert "mAP@.5:.95" in md and "## How this was made" in md
