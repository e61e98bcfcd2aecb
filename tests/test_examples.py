"""Every script in examples/ runs end to end on real data with a tiny budget (the full budgets
are in each script's docstring)."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_example_is_covered():
    covered = {"fsdd_wavenet.py", "multi_mnist_qyolo.py", "cifar10_binary_zoo.py",
               "cifar10_bnas.py"}
    assert {p.name for p in (ROOT / "examples").glob("*.py")} == covered


@pytest.mark.slow
def test_fsdd_wavenet_example(tmp_path, run_script):
    out = run_script("examples/fsdd_wavenet.py", "--epochs", 1, "--channels", 8, "--train-recordings", 64,
                      "--test-recordings", 20, "--variants", "bireal", "pcnn")
    assert "FSDD: 64 train / 20 test recordings" in out
    assert len(re.findall(r"(bireal|pcnn): trained 1 epochs", out)) == 2


@pytest.mark.slow
def test_multi_mnist_qyolo_example(run_script):
    out = run_script("examples/multi_mnist_qyolo.py", "--train-images", 64, "--test-images", 16,
                      "--epochs", 1, "--width", 4, "--calibration-images", 16,
                      "--binary-backbone", "asda")
    for method in ("unilateral_histogram", "minmax", "percentile"):
        assert re.search(rf"int8 {method} \([\d.]+ KiB\): mAP@0.5", out), out
    assert re.search(r"asda backbone trained .* LCE \([\d.]+ KiB\): mAP@0.5", out), out


@pytest.mark.slow
def test_cifar10_binary_zoo_example(run_script):
    out = run_script("examples/cifar10_binary_zoo.py", "--models", "BiRealNet", "--width", 4,
                      "--train-images", 128, "--test-images", 64, "--epochs", 1)
    assert "CIFAR-10: 128 train / 64 test images" in out
    assert re.search(r"BiRealNet: [\d,]+ parameters, trained in", out), out


@pytest.mark.slow
def test_cifar10_bnas_example(tmp_path, run_script):
    run_script("examples/cifar10_bnas.py", "--train-images", 128, "--test-images", 32,
                "--search-epochs", 2, "--search-cells", 2, "--nodes", 2, "--epochs", 1, "--out", tmp_path / "out")
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["genotype"]["meta"]["strategy"] == "BNAS"
    assert result["agreement"] >= 0.95 and result["lce_bytes"] > 0
    for f in ("genotype.json", "cells.png", "derived.keras", "derived.tflite"):
        assert (tmp_path / "out" / f).stat().st_size > 0
