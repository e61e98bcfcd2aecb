"""The README's Python example must run as written (on real MNIST)."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 30
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "mnist_bnn.tflite").stat().st_size > 1000
    m = re.search(r"lce \(indirect_bgemm\) on 1000 examples: accuracy ([\d.]+)%.*agreement ([\d.]+)%",
                  r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) > 85 and float(m.group(2)) >= 99.0
