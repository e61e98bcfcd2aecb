"""Conversion to TFLite / LCE / TFLite Micro / Edge TPU (``tfcompress.convert``)."""

from tfcompress.conversion.checks import TARGETS, check_model
from tfcompress.conversion.converter import convert
from tfcompress.conversion.result import ConversionResult
from tfcompress.conversion.sparse import convert_sparse

__all__ = ["ConversionResult", "TARGETS", "check_model", "convert", "convert_sparse"]
