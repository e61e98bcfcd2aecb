import json

import pytest


@pytest.mark.slow
def test_bench_lowbit_quick_runs(tmp_path, run_script):
    run_script("tools/bench_lowbit.py", "--quick", "--out-dir", str(tmp_path), timeout=900)
    data = json.loads((tmp_path / "lowbit.json").read_text())
    rows = data["rows"]
    assert [r["method"] for r in rows] == ["float (reference)", "lsq"]
    for r in rows[1:]:
        assert "error" not in r, r
        assert 0 < r["weight_bytes"] < r["file_bytes"] and r["litert_ms"] > 0 and r["micro_ms"] > 0
        assert 0.0 <= r["agreement"] <= 1.0 and r["micro_examples"] == 20
    lsq = rows[1]
    assert lsq["hidden_stored_bits"] == "4/4"          # 2-bit LSQ kernels packed (INT4)
    assert lsq["weight_bytes"] < lsq["weight_bytes_trained"] * 2
    meta = data["meta"]
    assert meta["seed"] == 0 and meta["quick"] and "load average" in meta["load_average_start"]
    assert {p["plan"] for p in meta["plans"]} == {"OMPQ", "uniform 4-bit"}
    assert [p["method"] for p in meta["bitplanes"]] == ["trq"]
    assert meta["bitplanes"][0]["lce_agreement"] == meta["bitplanes"][0]["tfcompress_agreement"] == 1.0
    assert all({"check", "value", "need"} <= set(c) for c in meta["checks"])
    md = (tmp_path / "lowbit.md").read_text()
    assert "## Acceptance checks" in md and "## OMPQ plan" in md and "LceBconv2d" in md
    assert f"{100 * lsq['agreement']:.2f}%" in md
