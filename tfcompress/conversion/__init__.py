"""Conversion to TFLite / LCE / TFLite Micro / Edge TPU (``tfcompress.convert``)."""

from tfcompress.conversion.checks import TARGETS, check_model
from tfcompress.conversion.converter import convert
from tfcompress.conversion.result import ConversionResult

__all__ = ["ConversionResult", "TARGETS", "check_model", "convert"]
