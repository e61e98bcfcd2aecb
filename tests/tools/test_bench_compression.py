import json

import pytest


@pytest.mark.slow
def test_bench_compression_quick_runs(tmp_path, run_script):
    run_script("tools/bench_compression.py", "--quick", "--out-dir", str(tmp_path), timeout=900)
    data = json.loads((tmp_path / "compression.json").read_text())
    experiments = [row["experiment"] for row in data["rows"]]
    assert experiments == ["baseline"] + ["mixed precision"] * 3 + ["distillation"] * 2 + ["low-rank"]
    mp = data["rows"][1:4]
    assert all(row["kernel_kib"] <= mp[0]["kernel_kib"] + 1e-9 for row in mp)   # equal-size budget
    assert data["rows"][-1]["params"] < data["rows"][0]["params"]
    assert "OMPQ >= uniform 4-bit" in (tmp_path / "compression.md").read_text()
