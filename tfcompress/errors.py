"""Exceptions raised by tfcompress. Each message names the cause and what to change."""


class TfcompressError(Exception):
    """Base class of tfcompress's own errors."""


class DataError(TfcompressError, ValueError):
    """A dataset is unknown, missing or corrupt."""


class ConversionError(TfcompressError, ValueError):
    """A model cannot be converted to the requested target (names the layer and reason)."""


class InterpreterError(TfcompressError, RuntimeError):
    """A flatbuffer could not be loaded or run by an interpreter."""


class PruningError(TfcompressError, ValueError):
    """A model, option or state does not allow the requested pruning step (names the layer)."""
