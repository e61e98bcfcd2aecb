"""Audio front end and the (1-bit) WaveNet: a numpy log-mel reference, causality, LCE
conversion of the binarized variants, and the errors for wrong lengths and rates."""

import inspect

import numpy as np
import pytest

import tfcompress
from tfcompress import _kernels, audio, models
from tfcompress._keras import keras, tf
from tfcompress.layers import PCNNConv2D, PCNNTrainer, QuantConv2D

SMALL = dict(input_length=2000, num_classes=4, channels=8, dilations=(1, 2, 4),
             classifier_activation=None)


def _numpy_log_mel(x, layer):
    n = layer.frame_length
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)     # periodic Hann
    frames = np.lib.stride_tricks.sliding_window_view(x, n, axis=-1)[:, ::layer.frame_step]
    power = np.abs(np.fft.rfft(frames * window, n=layer.fft_length)) ** 2
    mel = tf.signal.linear_to_mel_weight_matrix(layer.num_mel_bins, layer.fft_length // 2 + 1,
                                                layer.sample_rate, layer.lower_edge_hertz,
                                                layer.upper_edge_hertz).numpy()
    return np.log(power @ mel + layer.log_offset)


def test_log_mel_matches_numpy_and_runs_in_both_interpreters(tmp_path):
    layer = audio.LogMelSpectrogram(sample_rate=8000, frame_length=200, frame_step=80,
                                    num_mel_bins=20)
    assert layer.fft_length == 256
    rng = np.random.default_rng(0)
    t = np.arange(1600) / 8000
    x = (0.3 * np.sin(2 * np.pi * 440 * t)[None] + 0.05 * rng.normal(size=(3, 1600))).astype(np.float32)
    out = layer(x).numpy()
    assert out.shape == (3, layer.num_frames(1600), 20) == (3, 18, 20)
    np.testing.assert_allclose(out, _numpy_log_mel(x.astype(np.float64), layer), atol=2e-3)

    inp = keras.Input((1600,))
    model = keras.Model(inp, audio.LogMelSpectrogram(sample_rate=8000, frame_length=200,
                                                     frame_step=80, num_mel_bins=20)(inp))
    rep = tfcompress.convert(model, target="float32").verify(x, latency_runs=0)
    assert rep.runtime == "litert" and rep.max_abs_diff < 1e-3, rep
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), out, atol=1e-5)


def test_audio_errors_name_the_cause():
    with pytest.raises(ValueError, match="Nyquist"):
        audio.LogMelSpectrogram(sample_rate=8000, upper_edge_hertz=6000)
    with pytest.raises(ValueError, match="sample_rate"):
        audio.LogMelSpectrogram(sample_rate=0)
    with pytest.raises(ValueError, match="shorter than one frame"):
        audio.LogMelSpectrogram(frame_length=256)(np.zeros((1, 100), np.float32))
    with pytest.raises(ValueError, match="16000 samples but the model expects 8000 samples"):
        audio.check_waveforms(np.zeros((2, 16000), np.float32), input_length=8000, sample_rate=8000)
    with pytest.raises(ValueError, match="float waveforms"):
        audio.check_waveforms(np.zeros((2, 10), np.int16), input_length=10)
    assert audio.fit_length(np.ones((2, 5)), 8).tolist() == [[1] * 5 + [0] * 3] * 2
    with pytest.raises(ValueError, match="shorter than one frame"):
        models.BinaryWaveNet(input_length=100)
    with pytest.raises(ValueError, match="sample_rate must be an int"):
        models.BinaryWaveNet(input_length=8000, sample_rate=8000.5)
    with pytest.raises(ValueError, match="20.0 ms at 16000 Hz"):
        models.BinaryWaveNet(input_length=300, sample_rate=16000, frame_length=320)
    with pytest.raises(ValueError, match="binarization"):
        models.BinaryWaveNet(binarization="xnor")
    with pytest.raises(ValueError, match="multiple of projections"):
        models.BinaryWaveNet(binarization="pcnn", channels=9, projections=2)


def test_read_wav_refuses_a_different_rate(tmp_path):
    import wave

    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.arange(10, dtype="<i2") * 1000).tobytes())
    with pytest.raises(ValueError, match="16000 Hz but the model expects 8000 Hz"):
        audio.read_wav(path, sample_rate=8000)
    np.testing.assert_allclose(audio.read_wav(path, sample_rate=16000), np.arange(10) * 1000 / 32768)


def test_wavenet_is_causal():
    model = models.BinaryWaveNet(binarization="bireal", **SMALL)
    body = keras.Model(model.input, model.get_layer("block1_d4_skip_add").output)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 2000)).astype(np.float32)
    y = x.copy()
    y[:, 1500:] = 0.0                                     # silence the end of the waveform
    a, b = body(x).numpy(), body(y).numpy()
    frames = 1 + (1500 - 256) // 128                      # frames that end before sample 1500
    np.testing.assert_array_equal(a[:, :, :frames], b[:, :, :frames])
    assert not np.allclose(a[:, :, -1], b[:, :, -1])


@pytest.mark.parametrize("binarization, front_end", [("bireal", "log_mel"), ("pcnn", "raw")])
def test_binary_wavenet_trains_and_converts_with_lce(binarization, front_end, tmp_path):
    model = models.BinaryWaveNet(binarization=binarization, front_end=front_end, **SMALL)
    binary = [l for l in model.layers if isinstance(l, (QuantConv2D, PCNNConv2D))]
    assert len(binary) == 3 * 3 - 1            # dilated + residual + skip, last residual unused
    assert all(l.kernel_size[0] == 1 for l in binary)
    rng = np.random.default_rng(0)
    x = (0.1 * rng.normal(size=(8, 2000))).astype(np.float32)
    y = rng.integers(0, 4, 8)
    trainable = PCNNTrainer(model, lam=1e-4) if binarization == "pcnn" else model
    trainable.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = trainable.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    model.save(tmp_path / "w.keras")
    again = keras.models.load_model(tmp_path / "w.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    res = tfcompress.convert(model, target="lce")
    assert res.info.op_counts.get("LceBconv2d") == len(binary), res.info.op_counts
    rep = res.verify(x, latency_runs=0)
    assert rep.max_abs_diff <= 1e-3, rep
    if _kernels.available():                     # the whole graph runs in our kernels
        assert rep.runtime == "tfcompress", rep


def test_float_wavenet_converts_to_tflite_and_has_no_binary_layer():
    model = models.BinaryWaveNet(binarization=None, **SMALL)
    assert not any(isinstance(l, (QuantConv2D, PCNNConv2D)) for l in model.layers)
    x = (0.1 * np.random.default_rng(1).normal(size=(4, 2000))).astype(np.float32)
    rep = tfcompress.convert(model, target="float32").verify(x, latency_runs=0)
    assert rep.max_abs_diff <= 1e-3, rep
    assert all(p.kind == p.KEYWORD_ONLY for p in inspect.signature(models.BinaryWaveNet).parameters.values())
