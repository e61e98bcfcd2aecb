"""tools/bench_pruning.py --quick runs end to end and writes its table (about a minute)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_pruning_quick(tmp_path):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_pruning.py"), "--quick", "--seed", "1",
         "--out-dir", str(tmp_path), "--methods", "l1,em"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "pruning.md").read_text()
    record = json.loads((tmp_path / "pruning.json").read_text())
    names = [r["variant"] for r in record["rows"]]
    assert names == ["dense", "magnitude 50%", "magnitude 75%", "magnitude 90%",
                     "filters l1 30% + shrink", "filters l1 50% + shrink",
                     "filters em 30% + shrink", "filters em 50% + shrink"]
    assert record["meta"]["seed"] == 1 and record["meta"]["quick"] is True
    for row in record["rows"]:
        assert 0.0 <= row["tflite_accuracy"] <= 1.0 and row["int8_bytes"] > 0
        assert row["latency"]["median_ms"] > 0
        if row["kind"] == "filters":
            assert row["shrink_max_abs_diff"] <= 1e-4
            assert row["macs"] < record["rows"][0]["macs"]
            assert row["int8_bytes"] < record["rows"][0]["int8_bytes"]
        if row["kind"] == "magnitude":
            assert row["nonzero_params"] < record["rows"][0]["nonzero_params"]
    assert "| dense |" in md and "Targets" in md and "## How this was made" in md
