"""Audio front end: a log-mel spectrogram layer that converts to TFLite and LCE, and checks of
waveform length and sample rate.

:class:`LogMelSpectrogram` computes ``log(mel(|STFT(x)|^2) + offset)`` with ``tf.signal``
(periodic Hann window, ``tf.signal.rfft``, ``tf.signal.linear_to_mel_weight_matrix``; the same
values as ``tf.signal.stft`` without end padding). The TFLite
converter maps it to ``RFFT2D``, ``COMPLEX_ABS``, ``FULLY_CONNECTED`` and ``LOG``, which both
ai-edge-litert and LCE's interpreter run (checked by the tests against the Keras output).

>>> layer = LogMelSpectrogram(sample_rate=8000, frame_length=256, frame_step=128)
>>> layer.num_frames(8000)
61
"""

import wave
from pathlib import Path

import numpy as np

from tfcompress._keras import keras, tf


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


@keras.utils.register_keras_serializable(package="tfcompress")
class LogMelSpectrogram(keras.layers.Layer):
    """``(N, samples)`` float waveforms -> ``(N, frames, num_mel_bins)`` log-mel energies.

    Args:
        sample_rate: sampling rate of the waveforms in Hz (sets the mel filter frequencies).
        frame_length, frame_step: STFT window and hop in samples (frames =
            ``1 + (samples - frame_length) // frame_step``, no end padding).
        fft_length: FFT size (default: the smallest power of two >= ``frame_length``).
        num_mel_bins: mel bands.
        lower_edge_hertz, upper_edge_hertz: mel filter range; the upper edge defaults to the
            Nyquist frequency ``sample_rate / 2`` and may not exceed it.
        log_offset: added before the logarithm.

    Raises:
        ValueError: a non-positive rate or size, a mel range outside ``(0, sample_rate / 2]``,
            or (when built) an input shorter than one frame or without a fixed length.
    """

    def __init__(self, *, sample_rate=8000, frame_length=256, frame_step=128, fft_length=None,
                 num_mel_bins=40, lower_edge_hertz=20.0, upper_edge_hertz=None, log_offset=1e-6,
                 **kwargs):
        super().__init__(**kwargs)
        self.sample_rate = _positive_int(sample_rate, "sample_rate")
        self.frame_length = _positive_int(frame_length, "frame_length")
        self.frame_step = _positive_int(frame_step, "frame_step")
        if fft_length is None:
            fft_length = 1 << (self.frame_length - 1).bit_length()
        self.fft_length = _positive_int(fft_length, "fft_length")
        if self.fft_length < self.frame_length:
            raise ValueError(f"fft_length ({self.fft_length}) must be >= frame_length "
                             f"({self.frame_length}).")
        self.num_mel_bins = _positive_int(num_mel_bins, "num_mel_bins")
        nyquist = self.sample_rate / 2.0
        self.lower_edge_hertz = float(lower_edge_hertz)
        self.upper_edge_hertz = nyquist if upper_edge_hertz is None else float(upper_edge_hertz)
        if not 0.0 <= self.lower_edge_hertz < self.upper_edge_hertz:
            raise ValueError(f"lower_edge_hertz ({self.lower_edge_hertz}) must be >= 0 and below "
                             f"upper_edge_hertz ({self.upper_edge_hertz}).")
        if self.upper_edge_hertz > nyquist:
            raise ValueError(
                f"upper_edge_hertz={self.upper_edge_hertz:g} Hz is above the Nyquist frequency "
                f"{nyquist:g} Hz of sample_rate={self.sample_rate} Hz; is sample_rate right for "
                "these waveforms?")
        self.log_offset = float(log_offset)
        if not self.log_offset > 0:
            raise ValueError(f"log_offset must be > 0, got {log_offset!r}.")

    def num_frames(self, num_samples):
        """Frames produced for ``num_samples`` input samples."""
        return 1 + (int(num_samples) - self.frame_length) // self.frame_step

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"{self.name} expects fixed-length waveforms of shape (batch, samples), "
                             f"got {tuple(input_shape)}.")
        if input_shape[-1] < self.frame_length:
            raise ValueError(
                f"{self.name}: waveforms of {input_shape[-1]} samples are shorter than one frame "
                f"({self.frame_length} samples = {1e3 * self.frame_length / self.sample_rate:.1f} ms "
                f"at {self.sample_rate} Hz).")
        with tf.init_scope():   # a constant, computed eagerly even when built inside a graph
            self._mel = tf.signal.linear_to_mel_weight_matrix(
                self.num_mel_bins, self.fft_length // 2 + 1, self.sample_rate,
                self.lower_edge_hertz, self.upper_edge_hertz).numpy()
        super().build(input_shape)

    def _frames(self, inputs):
        """``(N, frames, frame_length)`` windows. When the hop divides the window the frames are
        built from static reshapes and slices (no shape-dependent ops in the TFLite graph);
        otherwise ``tf.signal.frame``."""
        n = self.num_frames(inputs.shape[-1])
        if self.frame_length % self.frame_step:
            return tf.signal.frame(inputs, self.frame_length, self.frame_step)[:, :n]
        m = self.frame_length // self.frame_step
        hops = tf.reshape(inputs[:, :(n + m - 1) * self.frame_step], (-1, n + m - 1, self.frame_step))
        return tf.concat([hops[:, i:i + n] for i in range(m)], axis=-1)

    def call(self, inputs):
        window = tf.signal.hann_window(self.frame_length, periodic=True)
        stft = tf.signal.rfft(self._frames(inputs) * window, [self.fft_length])
        power = tf.square(tf.abs(stft))
        return tf.math.log(tf.tensordot(power, self._mel, 1) + self.log_offset)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_frames(input_shape[-1]), self.num_mel_bins)

    def get_config(self):
        return {**super().get_config(), "sample_rate": self.sample_rate,
                "frame_length": self.frame_length, "frame_step": self.frame_step,
                "fft_length": self.fft_length, "num_mel_bins": self.num_mel_bins,
                "lower_edge_hertz": self.lower_edge_hertz,
                "upper_edge_hertz": self.upper_edge_hertz, "log_offset": self.log_offset}


def check_waveforms(x, *, input_length, sample_rate=None):
    """Return ``x`` as a float32 ``(N, input_length)`` array or raise ``ValueError`` saying why.

    ``sample_rate`` only makes the message state the duration the model expects.
    """
    x = np.asarray(x)
    what = (f"{input_length} samples" if sample_rate is None
            else f"{input_length} samples ({input_length / sample_rate:.3g} s at {sample_rate} Hz)")
    if x.ndim != 2:
        raise ValueError(f"Expected waveforms of shape (examples, samples), got {x.shape}.")
    if x.shape[1] != input_length:
        raise ValueError(
            f"The waveforms have {x.shape[1]} samples but the model expects {what}; resample "
            "them to the model's rate, then cut or zero-pad with tfcompress.audio.fit_length.")
    if x.dtype.kind != "f":
        raise ValueError(f"Expected float waveforms in [-1, 1], got dtype {x.dtype}; divide "
                         "16-bit PCM by 32768.")
    if not np.isfinite(x).all():
        raise ValueError("The waveforms contain NaN or infinite values.")
    return x.astype(np.float32, copy=False)


def fit_length(x, length):
    """Cut or zero-pad (at the end) every waveform of ``x`` (N, samples) to ``length``."""
    length = _positive_int(length, "length")
    x = np.asarray(x, np.float32)
    out = np.zeros((len(x), length), np.float32)
    n = min(length, x.shape[1])
    out[:, :n] = x[:, :n]
    return out


def read_wav(path, *, sample_rate):
    """A mono 8/16-bit PCM WAV file as float32 in [-1, 1]; ``ValueError`` if its rate is not
    ``sample_rate`` (the rate the model was built for)."""
    path = Path(path)
    with wave.open(str(path)) as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        frames = w.readframes(w.getnframes())
    if rate != sample_rate:
        raise ValueError(f"{path} is sampled at {rate} Hz but the model expects {sample_rate} Hz; "
                         "resample it first.")
    if width == 2:
        audio = np.frombuffer(frames, "<i2").astype(np.float32) / 32768.0
    elif width == 1:
        audio = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise ValueError(f"{path} has {8 * width}-bit samples; expected 8 or 16-bit PCM.")
    return audio.reshape(-1, channels).mean(axis=1) if channels > 1 else audio


__all__ = ["LogMelSpectrogram", "check_waveforms", "fit_length", "read_wav"]
