import json
import re

import pytest

from bench_helpers import md_row, pct


@pytest.mark.slow
def test_bench_compression_quick_runs(tmp_path, run_script):
    run_script("tools/bench_compression.py", "--quick", "--out-dir", str(tmp_path), timeout=900)
    data = json.loads((tmp_path / "compression.json").read_text())
    experiments = [row["experiment"] for row in data["rows"]]
    assert experiments == ["baseline"] + ["mixed precision"] * 3 + ["distillation"] * 2 + ["low-rank"]
    mp = data["rows"][1:4]
    assert all(row["kernel_kib"] <= mp[0]["kernel_kib"] + 1e-9 for row in mp)   # equal-size budget
    assert data["rows"][-1]["params"] < data["rows"][0]["params"]
    md = (tmp_path / "compression.md").read_text()
    for row in data["rows"]:
        cells = md_row(md, row["experiment"])  # first row of each experiment at least
        assert cells[0] == row["experiment"]
    lines = [line for line in md.splitlines() if "| " + data["rows"][2]["model"] + " |" in line]
    assert lines and pct(data["rows"][2]["accuracy"]) in lines[0]
    # each verdict line states two accuracies from the rows and the right PASS/FAIL
    verdicts = re.findall(r"- (.+?): ([\d.]+) vs ([\d.]+) -> (PASS|FAIL)", md)
    assert len(verdicts) == 2, md
    accs = {round(row["accuracy"], 4) for row in data["rows"]}
    for _, a, b, result in verdicts:
        assert round(float(a), 4) in accs and round(float(b), 4) in accs
        assert result == ("PASS" if float(a) >= float(b) else "FAIL")
