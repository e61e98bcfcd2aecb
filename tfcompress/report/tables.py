"""Tables and the record of how each figure was made (see shared/docs/BENCHMARKS.md)."""

import datetime
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

_PACKAGES = ("tensorflow", "tf-keras", "larq", "larq-compute-engine",
             "tensorflow-model-optimization", "ai-edge-litert", "tflite-micro", "numpy")


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit():
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def package_versions(names=_PACKAGES):
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


_COMMIT_AT_IMPORT = []


def commit_at_start():
    """The commit when this module was first asked (benchmarks ask at start: see
    :func:`environment`), so a record names the code that ran, not a later checkout."""
    if not _COMMIT_AT_IMPORT:
        _COMMIT_AT_IMPORT.append(_git_commit())
    return _COMMIT_AT_IMPORT[0]


commit_at_start()          # at import: benchmark tools import this before they run


def environment():
    """Commit, date, CPU, cores, Python and library versions, for benchmark records.

    ``commit`` is the commit when the process first called this (or :func:`commit_at_start`);
    ``commit_at_write`` is added when the checkout changed while it ran."""
    start, now = commit_at_start(), _git_commit()
    return {
        "commit": start, **({"commit_at_write": now} if now != start else {}),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "versions": package_versions(),
    }


def markdown_table(rows, columns):
    """A markdown table from dict rows.

    ``columns`` holds ``(key, header, format)`` or ``(key, header, format, multiplier)``;
    missing or ``None`` values print as ``-``.
    """
    head = "| " + " | ".join(c[1] for c in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for row in rows:
        cells = []
        for col in columns:
            key, fmt = col[0], col[2]
            value = row.get(key)
            if value is None:
                cells.append("-")
                continue
            if len(col) > 3:
                value = value * col[3]
            cells.append(fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_benchmark(name, rows, columns, meta, out_dir="benchmarks", title=None, notes=()):
    """Write ``<out_dir>/<name>.md`` and ``.json`` with the table and how it was made."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = dict(environment())
    record.update(meta)
    md = [f"# {title or name}", "", markdown_table(rows, columns), ""]
    md += list(notes) + ([""] if notes else [])
    md += ["## How this was made", ""]
    md += [f"- {k}: {v}" for k, v in record.items()]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    (out / f"{name}.json").write_text(json.dumps({"meta": record, "rows": rows}, indent=2, default=str))
    return out / f"{name}.md"
