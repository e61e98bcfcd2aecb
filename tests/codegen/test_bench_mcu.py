"""tools/bench_mcu.py --quick runs end to end and writes the table with its checks."""

import json

import pytest

from tfcompress.codegen import cortexm


@pytest.mark.slow
def test_bench_mcu_quick_runs(tmp_path, run_script):
    ok, why = cortexm.toolchain_available()
    if not ok:
        pytest.skip(why)
    run_script("tools/bench_mcu.py", "--quick", "--out-dir", str(tmp_path), timeout=1200)
    record = json.loads((tmp_path / "mcu.json").read_text())
    models = [r["model"] for r in record["rows"]]
    assert models == ["MNIST float32", "MNIST int8", "MNIST binary", "CIFAR-10 int8 ResNet-10 (real)",
                      "CIFAR-10 binary ResNet-10"]
    assert all(r["qemu_identical"] for r in record["rows"])
    assert {c["check"][:20] for c in record["meta"]["checks"]} and len(record["meta"]["checks"]) == 5
    assert all(r["instructions"] > 0 and r["flash_bytes"] > 0 for r in record["rows"])
    text = (tmp_path / "mcu.md").read_text()
    assert "PASS" in text or "FAIL" in text
