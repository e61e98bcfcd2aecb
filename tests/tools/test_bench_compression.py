import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_compression_quick_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_compression.py"), "--quick",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "compression.json").read_text())
    experiments = [row["experiment"] for row in data["rows"]]
    assert experiments == ["baseline"] + ["mixed precision"] * 3 + ["distillation"] * 2 + ["low-rank"]
    mp = data["rows"][1:4]
    assert all(row["kernel_kib"] <= mp[0]["kernel_kib"] + 1e-9 for row in mp)   # equal-size budget
    assert data["rows"][-1]["params"] < data["rows"][0]["params"]
    assert "OMPQ >= uniform 4-bit" in (tmp_path / "compression.md").read_text()
