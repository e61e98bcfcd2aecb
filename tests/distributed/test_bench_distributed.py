"""``tools/bench_distributed.py --quick`` runs end to end (1 process, then 2 workers) and
writes a table whose numbers are the measured ones."""

import json

import pytest


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_distributed_quick_runs(tmp_path, run_script):
    run_script("tools/bench_distributed.py", "--quick", "--out-dir", str(tmp_path), timeout=560)
    data = json.loads((tmp_path / "distributed.json").read_text())
    rows = data["rows"]
    assert [(r["model"], r["setup"], r["workers"], r["global_batch"]) for r in rows] == [
        ("binary", "1 worker", 1, 64),
        ("binary", "2 workers, same global batch", 2, 64),
        ("binary", "2 workers, same per-worker batch", 2, 128)]
    for r in rows:
        assert r["step_ms"] > 0 and r["examples_per_s"] > 0 and r["timed_steps"] == 8
        assert r["examples_per_s"] == pytest.approx(r["global_batch"] / r["step_ms"] * 1e3)
    assert rows[0]["allreduce_ms"] is None and rows[0]["step_ratio"] == 1.0
    assert all(r["allreduce_ms"] > 0 for r in rows[1:])
    meta = data["meta"]
    assert meta["seed"] == 0 and meta["quick"] and "cpu" in meta and "load_average_before" in meta
    checks = {c["check"]: c for c in meta["checks"]}
    assert checks["binary: 2 workers finish with identical weights"]["value"] == 1.0
    md = (tmp_path / "distributed.md").read_text()
    for r in rows:
        assert f"{r['step_ms']:.1f}" in md and f"{r['step_ratio']:.2f}x" in md
