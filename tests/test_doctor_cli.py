import json
import subprocess
import sys

from tfcompress import doctor


def test_doctor_all_ok(capsys):
    code = doctor.main(as_json=True)
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"]
    names = {c["check"]: c["status"] for c in report["checks"]}
    for must in ("tensorflow", "larq", "Keras 2 (tf_keras) active",
                 "ai-edge-litert runs int8 TFLite", "LCE interpreter runs LCE models",
                 "tflite-micro runs int8 models", "data: mnist"):
        assert names[must] == "ok", (must, report)
    details = {c["check"]: c["detail"] for c in report["checks"]}
    assert details["LCE interpreter runs LCE models"].endswith("(lce)")   # not auto's pick
    from tfcompress import _kernels

    assert names["runtime='auto' for LCE files"] == ("ok" if _kernels.available() else "warn")


def test_doctor_fails_without_data_when_required(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TFCOMPRESS_DATA", str(tmp_path))
    monkeypatch.setenv("TFCOMPRESS_CACHE", str(tmp_path / "c"))
    monkeypatch.setattr(doctor, "_check_runtimes", lambda: iter(()))   # data checks only
    assert doctor.main(require_data=False) == 0
    assert doctor.main(require_data=True) == 1
    out = capsys.readouterr().out
    assert "FAIL  data: mnist" in out and "check(s) failed" in out


def test_cli_entry_point_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tfcompress.cli", "verify", str(tmp_path / "x.tflite"),
                        "--data", "mnist", "--limit", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr
