import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_quantizers_quick_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_quantizers.py"), "--quick",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "quantizers.json").read_text())
    kinds = [row["kind"] for row in data["rows"]]
    assert kinds == ["bnn_larq", "float", "bnn", "xnor", "bireal", "sabnn", "pcnn", "lsq2", "lsq3",
                     "lsq4", "trq"]
    for row in data["rows"]:
        assert 0.0 <= row["keras_accuracy"] <= 1.0 and row["step_ms"] > 0
        if row["kind"].startswith("lsq"):      # quick-mode LSQ conversion is known to fail here
            assert "file_bytes" in row or row["file"].startswith("failed:"), row
            continue
        assert "file_bytes" in row, row          # every other model converted
        assert row["agreement"] >= 0.9, row
    assert data["meta"]["seed"] == 0 and "cpu" in data["meta"]
    assert "step / larq BNN" in (tmp_path / "quantizers.md").read_text()
