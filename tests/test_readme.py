"""The README's commands and Python example must run as written (on real MNIST)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "tools"))
from readme_commands import readme_commands  # noqa: E402


def test_readme_python_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 30
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "mnist_bnn.tflite").stat().st_size > 1000
    m = re.search(r"(\w+) \([\w_]+\) on 1000 examples: accuracy ([\d.]+)%.*agreement ([\d.]+)%",
                  r.stdout)
    assert m, r.stdout
    assert m.group(1) in ("lce", "tfcompress")          # runtime="auto" for an LCE file
    assert float(m.group(2)) > 85 and float(m.group(3)) >= 99.0


def test_readme_has_the_two_commands():
    cmds = readme_commands()
    assert "pip install -e \".[dev]\"" in cmds["main"] and "tfcompress quickstart" in cmds["main"]
    assert cmds["test"].endswith("python -m pytest")
    with pytest.raises(ValueError, match="two one-line"):
        readme_commands("## The two commands\n\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="no '## The two commands'"):
        readme_commands("# nothing\n")


def test_ci_runs_the_readme_commands_it_extracts():
    ci = (ROOT / ".ci" / "run").read_text()
    # CI takes both commands from the README (not a copy that could drift) and runs them.
    assert 'tools/readme_commands.py --which main' in ci
    assert 'tools/readme_commands.py --which test' in ci
    assert 'bash -euo pipefail -c "$MAIN"' in ci and 'bash -euo pipefail -c "$TEST"' in ci
    assert "pytest" not in ci.replace("$TEST", "")    # no second, private test command


def _data_setting(cmd):
    """The TFCOMPRESS_DATA=... assignment of a README command."""
    for word in shlex.split(cmd.replace("&&", " ")):
        if word.startswith("TFCOMPRESS_DATA="):
            return word.split("=", 1)[1]
    raise AssertionError(f"no TFCOMPRESS_DATA in {cmd!r}")


def test_readme_relative_data_path_survives_a_change_of_directory(tmp_path):
    """The README's relative TFCOMPRESS_DATA, typed in the repository root, still finds the
    data after the process moves elsewhere, and in a child process started elsewhere."""
    value = _data_setting(readme_commands()["test"])
    assert not os.path.isabs(value)
    if not (ROOT / value / "mnist").is_dir():
        pytest.skip(f"{value} does not hold the shared data next to this checkout")
    code = (
        "import os, subprocess, sys\n"
        "import tfcompress\n"
        f"os.chdir({str(tmp_path)!r})\n"
        "(x, y), _ = tfcompress.data.load('mnist')\n"
        "print('parent', x.shape, os.environ['TFCOMPRESS_DATA'])\n"
        "child = 'import tfcompress; print(\"child\", tfcompress.data.load(\"mnist\")[1][0].shape)'\n"
        "subprocess.run([sys.executable, '-c', child], check=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TFCOMPRESS_DATA"}
    env.update(TFCOMPRESS_DATA=value, TF_CPP_MIN_LOG_LEVEL="3",
               TFCOMPRESS_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    parent = re.search(r"parent \(60000, 28, 28\) (\S+)", r.stdout)
    assert parent, r.stdout
    assert os.path.isabs(parent.group(1))
    assert Path(parent.group(1)).resolve() == (ROOT / value).resolve()
    assert "child (10000, 28, 28)" in r.stdout, r.stdout


def test_relative_data_env_is_made_absolute(monkeypatch, tmp_path):
    from tfcompress._env import resolve_data_env

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFCOMPRESS_DATA", "some/rel")
    assert resolve_data_env() == str(tmp_path / "some" / "rel")
    assert os.environ["TFCOMPRESS_DATA"] == str(tmp_path / "some" / "rel")
    monkeypatch.setenv("TFCOMPRESS_DATA", "/abs/path")
    assert resolve_data_env() == "/abs/path"
    monkeypatch.setenv("TFCOMPRESS_DATA", "")
    assert resolve_data_env() == ""
