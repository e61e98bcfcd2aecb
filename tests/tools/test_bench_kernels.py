import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_kernels_quick_runs(tmp_path):
    from tfcompress import _kernels

    if not _kernels.available():
        pytest.skip(f"tfcompress kernels unavailable: {_kernels.unavailable_reason()}")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_kernels.py"), "--quick",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "kernels.json").read_text())
    runtimes = [row["runtime"] for row in data["rows"]]
    assert runtimes[0] == f"tfcompress ({_kernels.best_isa()})"
    baselines = {"LCE (default)", "LCE (indirect_bgemm)", "float32 XNNPACK", "int8 XNNPACK"}
    assert baselines <= set(runtimes)
    assert data["meta"]["relative_error_vs_lce"]["bnn4-32"] <= 1e-5
    assert abs(data["rows"][0]["mmac"] - 190.5) < 1.0      # the 191M-MAC net of X86_KERNELS.md
    assert "## Acceptance (issue 9)" in (tmp_path / "kernels.md").read_text()
