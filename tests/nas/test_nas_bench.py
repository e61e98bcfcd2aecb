"""tools/bench_nas.py --quick runs end to end (search, derive, train, LCE) and writes its record."""

import json

import pytest


@pytest.mark.slow
def test_bench_nas_quick_runs(tmp_path, run_script):
    run_script("tools/bench_nas.py", "--quick", "--out-dir", str(tmp_path), timeout=1500)
    data = json.loads((tmp_path / "nas.json").read_text())
    assert [row["kind"] for row in data["rows"]] == ["darts", "bnas", "baseline"]
    for row in data["rows"]:
        assert 0.0 <= row["keras_accuracy"] <= 1.0 and row["params"] > 0
        assert row["lce_bconv"] > 0 and row["agreement"] >= 0.95     # converted and checked in LCE
        assert 0.5 < row["binary_op_ratio"] <= 1.0
    for row in data["rows"][:2]:
        assert row["search_seconds"] > 0 and "normal=[" in row["genotype"]
    meta = data["meta"]
    assert meta["seed"] == 0 and meta["quick"] and "cpu" in meta
    assert set(meta["genotypes"]) == {"darts", "bnas"}
    assert "binary-op ratio" in (tmp_path / "nas.md").read_text()


@pytest.mark.slow
def test_bench_nas_detection_quick_runs(tmp_path, run_script):
    run_script("tools/bench_nas.py", "--quick", "--task", "detection", "--out-dir", str(tmp_path), timeout=1500)
    data = json.loads((tmp_path / "nas_detection.json").read_text())
    searched, baseline = data["rows"]
    assert searched["method"].startswith("BDetNAS") and baseline["method"].startswith("hand-made")
    for row in data["rows"]:
        assert 0.0 <= row["lce_map50"] <= 1.0 and row["lce_bconv"] > 0 and row["params"] > 0
    assert searched["search_seconds"] > 0 and 0.0 <= searched["supernet_map50"] <= 1.0
    assert data["meta"]["genotype"]["meta"]["strategy"] == "BDetNAS"
    assert "--task detection" in data["meta"]["command"]
