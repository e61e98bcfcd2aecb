"""Helpers for the benchmark smoke tests: read the markdown tables the tools write."""


def md_row(md, first_cell):
    """The cells of the markdown table row whose first cell is ``first_cell`` (fails if absent)."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in:\n{md}")


def pct(value):
    """A fraction as the tables print it ("98.75%")."""
    return f"{100 * value:.2f}%"
