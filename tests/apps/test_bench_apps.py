import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_apps_quick_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_apps.py"), "--quick",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=1500,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "apps.json").read_text())
    models = [row["model"] for row in data["rows"]]
    assert models[:3] == ["WaveNet float32", "WaveNet Bi-Real", "WaveNet PCNN"]
    assert [m for m in models if "Q-YOLO" in m] == [
        "TinyYOLO int8 Q-YOLO UH", "TinyYOLO int8 Q-YOLO min/max", "TinyYOLO int8 Q-YOLO percentile 99.99"]
    assert sum(row["application"] == "CIFAR-10" for row in data["rows"]) == 3
    for row in data["rows"]:
        assert 0.0 <= row["tflite_metric"] <= 1.0 and row["size_bytes"] > 0
        assert row["latency_median_ms"] > 0
        if "lce" in row["runtime"] and row.get("agreement") is not None:
            assert row["agreement"] >= 0.95
    md = (tmp_path / "apps.md").read_text()
    assert "mAP@.5:.95" in md and "## How this was made" in md
