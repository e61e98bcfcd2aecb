import json

import pytest


@pytest.mark.slow
def test_bench_kernels_quick_runs(tmp_path, run_script):
    from tfcompress import _kernels

    if not _kernels.available():
        pytest.skip(f"tfcompress kernels unavailable: {_kernels.unavailable_reason()}")
    run_script("tools/bench_kernels.py", "--quick", "--out-dir", str(tmp_path), timeout=900)
    data = json.loads((tmp_path / "kernels.json").read_text())
    runtimes = [row["runtime"] for row in data["rows"]]
    assert runtimes[0] == f"tfcompress ({_kernels.best_isa()})"
    baselines = {"LCE (default)", "LCE (indirect_bgemm)", "float32 XNNPACK", "int8 XNNPACK"}
    assert baselines <= set(runtimes)
    assert data["meta"]["relative_error_vs_lce"]["bnn4-32"] <= 1e-5
    assert abs(data["rows"][0]["mmac"] - 190.5) < 1.0      # the 191M-MAC net of X86_KERNELS.md
    assert "## Acceptance (issue 9)" in (tmp_path / "kernels.md").read_text()
