"""Keep TensorFlow's start-up messages off the terminal of the ``tfcompress`` command.

``TF_CPP_MIN_LOG_LEVEL=2`` (when the user has not set it) silences TensorFlow's C++ INFO and
WARNING records, but TensorFlow and LiteRT print some lines before that setting is read (the
oneDNN notice, twice; "Could not find cuda drivers"; LiteRT's "Created TensorFlow Lite XNNPACK
delegate"), and machines without a GPU get a CUDA ``cuInit`` error record. :class:`QuietStderr`
filters this process's standard error and drops exactly those known lines; everything else
passes through unchanged. ``CUDA_VISIBLE_DEVICES`` is not touched, so GPUs stay usable.
"""

import os
import re
import sys
import threading

__all__ = ["NOISE", "QuietStderr", "quiet_environment"]

NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \S+\s+\d+ \S+:\d+\] "                       # absl INFO/WARNING records
    r"|E\d{4} \S+\s+\d+ \S+:\d+\] failed call to cuInit"     # no GPU: expected, not an error
    r"|To enable the following instructions: .*rebuild TensorFlow"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    # TFLite Micro while `convert --target micro` searches the smallest arena (a failure to
    # fit at every size is raised as an error, which is printed):
    r"|Failed to (resize buffer|allocate tail memory|allocate memory for persistent "
    r"TfLiteTensor|initialize output tensor)"
    r"|Arena size is too small for all buffers"
)
NOISE_STARTS = ("W", "I", "E", "To enable", "INFO: Created", "Failed to", "Arena size")



class QuietStderr:
    """Route file descriptor 2 through a thread that drops the lines matching ``NOISE``.

    A pipe replaces fd 2 (so C++ writes are caught too); the thread forwards every other
    byte to the original stderr as soon as it arrives: complete lines (``\\n`` or ``\\r``, so
    progress bars keep working) at once, and an unfinished line at once unless it could be the
    start of a known message.
    """

    def __init__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._read = read
        self._thread = threading.Thread(target=self._pump, name="tfcompress-stderr", daemon=True)
        self._thread.start()

    def _write(self, data):
        while data:
            data = data[os.write(self._saved, data):]

    def _pump(self):
        pending = b""
        dropped_cr = False          # the last line dropped ended in "\r" (of a "\r\n")
        while True:
            try:
                chunk = os.read(self._read, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            parts = re.split(rb"(?<=[\r\n])", pending + chunk)
            pending = parts.pop()
            keep = []
            for part in parts:
                if part == b"\n" and dropped_cr:
                    dropped_cr = False
                    continue
                noise = bool(NOISE.match(part.decode("utf-8", "replace")))
                dropped_cr = noise and part.endswith(b"\r")
                if not noise:
                    keep.append(part)
            tail = pending.decode("utf-8", "replace")
            if pending and not tail.startswith(NOISE_STARTS) and not any(
                    s.startswith(tail) for s in NOISE_STARTS):
                keep.append(pending)
                pending = b""
            if keep:
                self._write(b"".join(keep))
        if pending and not NOISE.match(pending.decode("utf-8", "replace")):
            self._write(pending)

    def stop(self):
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)          # closes this process's last write end of the pipe
        self._thread.join(timeout=2.0)   # a child still holding the pipe may keep it open
        if not self._thread.is_alive():
            os.close(self._read)
        os.close(self._saved)


def quiet_environment():
    """Settings read when TensorFlow loads (only in this command's process)."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings(
        "ignore", module=r"(tensorflow|tf_keras|keras|larq|larq_compute_engine|"
                         r"tensorflow_model_optimization|absl)(\.|$)")
    for name in ("absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)

