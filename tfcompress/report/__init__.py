"""Reports: the environment a figure was measured in, plain tables, and model summaries."""

from tfcompress.report.summary import ModelSummary, summary
from tfcompress.report.tables import environment, markdown_table, write_benchmark

__all__ = ["ModelSummary", "environment", "markdown_table", "summary", "write_benchmark"]
