"""Reports: the environment a figure was measured in, and plain tables."""

from tfcompress.report.tables import environment, markdown_table, write_benchmark

__all__ = ["environment", "markdown_table", "write_benchmark"]
