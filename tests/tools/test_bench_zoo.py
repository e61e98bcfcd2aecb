import json

import pytest


@pytest.mark.slow
def test_bench_zoo_quick_runs(tmp_path, run_script):
    from tfcompress import _kernels

    if not _kernels.available():
        pytest.skip(f"tfcompress kernels unavailable: {_kernels.unavailable_reason()}")
    run_script("tools/bench_zoo.py", "--quick", "--out-dir", str(tmp_path), timeout=900)
    data = json.loads((tmp_path / "zoo.json").read_text())
    rows = data["rows"]
    runtimes = {r["runtime"] for r in rows}
    assert "tfcompress" in runtimes and "int8 XNNPACK" in runtimes
    assert any(r.startswith("LCE (best: ") for r in runtimes)
    ours = next(r for r in rows if r["runtime"] == "tfcompress")
    assert ours["net"] == "QuickNetSmall" and ours["threads"] == 1 and ours["median_ms"] > 0
    assert ours["cpu_ms"] > 0 and ours["rel_error"] <= 1e-4   # vs the Keras model (logits)
    int8 = next(r for r in rows if r["runtime"] == "int8 XNNPACK")
    assert abs(int8["vs_int8"] - 1.0) < 1e-9
    assert abs(ours["vs_int8"] - int8["median_ms"] / ours["median_ms"]) < 1e-9
    meta = data["meta"]
    assert meta["size"] == 64 and meta["nets"]["QuickNetSmall"]["family"] == "QuickNet"
    assert meta["agreement"]["QuickNetSmall"]["tfcompress_vs_lce_reference"] <= 1e-3
    (check,) = meta["checks"]
    assert set(check) == {"check", "value", "need"} and check["need"] == 3.0
    assert "QuickNetSmall" in check["check"]
    assert "## Acceptance (issue 18)" in (tmp_path / "zoo.md").read_text()
