"""1-bit WaveNet for spoken-word classification (method card 6.1).

**Design proposal [D].** The book section's source paper, dataset and results were not found;
the card combines verified parts (Bi-Real binarization, PCNN's projection loss) into a
buildable design, and this module implements that design. It classifies whole utterances
(e.g. the Free Spoken Digit Dataset) instead of decoding with CTC.

Layout (all tensors are ``(N, 1, time, channels)``, so every 1-D convolution is a 2-D one
with a ``(1, k)`` kernel and ``(1, d)`` dilation: Larq Compute Engine turns those into
``LceBconv2d``, while a ``QuantConv1D`` stays a float ``CONV_2D``)::

    waveform (N, input_length)
      -> front end: log-mel (LogMelSpectrogram, then BN) or raw (strided real conv "filterbank")
      -> real 1x1 embedding -> BN                                              h
      -> for each dilation d (``stacks`` times):
           f    = BN(Conv_(1,k),dilation d(causal_pad(h)))   2C channels (filter | gate)
           z    = tanh(f[:C]) * sigmoid(f[C:])                 gating in full precision
           h    = h + BN(Conv_1x1(z))                          real residual shortcut
                                                               (not in the last block)
           skip = skip + BN(Conv_1x1(z))
      -> ReLU -> real 1x1 -> ReLU -> real 1x1 to classes -> average over time -> softmax

Binarization (``binarization=``):

- ``"bireal"``: the dilated, residual and skip convolutions are binary ``QuantConv2D`` with
  ApproxSign inputs, magnitude-aware weights and ``weight_clip``; every binary residual
  convolution sits inside a real-valued shortcut (Bi-Real's rule); the skip path is a real sum.
- ``"pcnn"``: the same convolutions are :class:`tfcompress.layers.PCNNConv2D` (``projections``
  learnable projections). Train with :class:`tfcompress.layers.PCNNTrainer` to add the
  projection loss (``model.fit`` alone trains it without ``L_P``).
- ``None`` / ``"float"``: the same network with real ``Conv2D`` layers, for comparison.

Causal padding pads the *real* tensor on the left with zeros before the binary convolution;
larq's and LCE's sign map 0 to +1, so the binary convolution sees +1 padding (as
``pad_values=1``) and LCE needs no padding correction. The front end, embedding, gating and
output layers stay real, as the card says.
"""

from tfcompress._keras import keras, tf
from tfcompress.audio import LogMelSpectrogram
from tfcompress.layers.pcnn import PCNNConv2D
from tfcompress.layers.quant import QuantConv2D
from tfcompress.models._common import bn, check_choice, check_int

BINARIZATIONS = ("bireal", "pcnn", "float")
FRONT_ENDS = ("log_mel", "raw")


@keras.utils.register_keras_serializable(package="tfcompress")
class GatedActivation(keras.layers.Layer):
    """WaveNet's gate: ``tanh(x[..., :C]) * sigmoid(x[..., C:])`` for ``2C`` input channels."""

    def build(self, input_shape):
        if input_shape[-1] is None or input_shape[-1] % 2:
            raise ValueError(f"{self.name} needs an even number of channels (filter | gate), "
                             f"got {input_shape[-1]}.")
        super().build(input_shape)

    def call(self, inputs):
        f, g = tf.split(inputs, 2, axis=-1)
        return tf.tanh(f) * tf.sigmoid(g)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] // 2,)


def _conv_factory(binarization, projections):
    def make(filters, kernel_size, dilation, name):
        if binarization == "bireal":
            return QuantConv2D(filters, kernel_size, dilation_rate=dilation, padding="valid",
                               use_bias=False, input_quantizer="approx_sign",
                               kernel_quantizer="magnitude_aware_sign",
                               kernel_constraint="weight_clip", name=name)
        if binarization == "pcnn":
            return PCNNConv2D(filters, kernel_size, dilation_rate=dilation, padding="valid",
                              projections=projections, name=name)
        return keras.layers.Conv2D(filters, kernel_size, dilation_rate=dilation, padding="valid",
                                   use_bias=False, name=name)

    return make


def BinaryWaveNet(*, input_length=8000, num_classes=10, binarization="bireal", sample_rate=8000,
                  front_end="log_mel", channels=64, skip_channels=None, kernel_size=3,
                  dilations=(1, 2, 4, 8, 16), stacks=1, num_mel_bins=40, frame_length=256,
                  frame_step=128, projections=2, classifier_activation="softmax", name=None):
    """A (1-bit) WaveNet classifier of fixed-length waveforms (see the module docstring).

    Args:
        input_length: samples per waveform (8000 = 1 s of FSDD at 8 kHz).
        num_classes: output classes.
        binarization: ``"bireal"``, ``"pcnn"``, or ``None``/``"float"`` for the real network.
        sample_rate: sampling rate in Hz of the waveforms (sets the mel filters).
        front_end: ``"log_mel"`` (:class:`tfcompress.audio.LogMelSpectrogram`) or ``"raw"`` (a
            learned real strided convolution of ``frame_length`` taps, hop ``frame_step``).
        channels: residual channels C (the dilated convolution has 2C for filter and gate).
        skip_channels: skip-path channels (default ``channels``).
        kernel_size: taps of the dilated convolutions.
        dilations, stacks: dilation of each residual block, repeated ``stacks`` times; the
            receptive field is ``1 + stacks * (kernel_size - 1) * sum(dilations)`` frames.
        num_mel_bins, frame_length, frame_step: front-end sizes.
        projections: PCNN projections J (channel counts must be multiples of J).
        classifier_activation: ``"softmax"`` or ``None`` (logits).

    Raises:
        ValueError: an unknown option, a waveform shorter than one frame, a mel range above
            the Nyquist frequency of ``sample_rate``, or channel counts PCNN cannot split.
    """
    if binarization is None:
        binarization = "float"
    check_choice(binarization, "binarization", BINARIZATIONS + (None,))
    check_choice(front_end, "front_end", FRONT_ENDS)
    input_length = check_int(input_length, "input_length")
    check_int(num_classes, "num_classes")
    check_int(sample_rate, "sample_rate")
    check_int(channels, "channels")
    skip_channels = channels if skip_channels is None else check_int(skip_channels, "skip_channels")
    check_int(kernel_size, "kernel_size", 2)
    check_int(stacks, "stacks")
    dilations = tuple(dilations)
    if not dilations:
        raise ValueError("dilations must not be empty.")
    for d in dilations:
        check_int(d, "each dilation")
    check_int(frame_length, "frame_length")
    check_int(frame_step, "frame_step")
    if input_length < frame_length:
        raise ValueError(
            f"input_length={input_length} samples is shorter than one frame of frame_length="
            f"{frame_length} samples ({1e3 * frame_length / sample_rate:.1f} ms at {sample_rate} "
            "Hz); check input_length and sample_rate.")
    if binarization == "pcnn":
        check_int(projections, "projections")
        for what, c in (("channels", channels), ("2 * channels", 2 * channels),
                        ("skip_channels", skip_channels)):
            if c % projections:
                raise ValueError(f"PCNN splits each convolution into {projections} projections: "
                                 f"{what} ({c}) must be a multiple of projections.")

    inputs = keras.Input((input_length,), name="waveform")
    if front_end == "log_mel":
        mel = LogMelSpectrogram(sample_rate=sample_rate, frame_length=frame_length,
                                frame_step=frame_step, num_mel_bins=num_mel_bins,
                                name="log_mel")
        x = mel(inputs)
        x = keras.layers.Reshape((1, mel.num_frames(input_length), num_mel_bins),
                                 name="to_2d")(x)
    else:
        x = keras.layers.Reshape((1, input_length, 1), name="to_2d")(inputs)
        x = keras.layers.Conv2D(channels, (1, frame_length), strides=(1, frame_step),
                                use_bias=False, name="filterbank")(x)
    x = bn("front_bn")(x)
    x = keras.layers.Conv2D(channels, 1, use_bias=False, name="embed")(x)
    x = bn("embed_bn")(x)

    conv = _conv_factory(binarization, projections)
    skip = None
    blocks = [(s, d) for s in range(stacks) for d in dilations]
    for i, (s, d) in enumerate(blocks):
        name = f"block{s + 1}_d{d}"
        pad = (kernel_size - 1) * d
        f = keras.layers.ZeroPadding2D(((0, 0), (pad, 0)), name=f"{name}_causal_pad")(x)
        f = conv(2 * channels, (1, kernel_size), (1, d), f"{name}_dilated")(f)
        f = bn(f"{name}_dilated_bn")(f)
        z = GatedActivation(name=f"{name}_gate")(f)
        if i < len(blocks) - 1:     # the last block's residual output would feed nothing
            r = bn(f"{name}_res_bn")(conv(channels, 1, 1, f"{name}_res")(z))
            x = keras.layers.Add(name=f"{name}_res_add")([x, r])
        k = bn(f"{name}_skip_bn")(conv(skip_channels, 1, 1, f"{name}_skip")(z))
        skip = k if skip is None else keras.layers.Add(name=f"{name}_skip_add")([skip, k])
    y = keras.layers.ReLU(name="out_relu1")(skip)
    y = keras.layers.Conv2D(skip_channels, 1, name="out_conv1")(y)
    y = keras.layers.ReLU(name="out_relu2")(y)
    y = keras.layers.Conv2D(num_classes, 1, name="out_conv2")(y)
    y = keras.layers.GlobalAveragePooling2D(name="time_pool")(y)
    if classifier_activation is not None:
        y = keras.layers.Activation(classifier_activation, name=f"out_{classifier_activation}")(y)
    return keras.Model(inputs, y, name=name or f"wavenet_{binarization}")


def receptive_field(*, kernel_size=3, dilations=(1, 2, 4, 8, 16), stacks=1):
    """Frames one output sees: ``1 + stacks * (kernel_size - 1) * sum(dilations)``."""
    return 1 + stacks * (kernel_size - 1) * sum(dilations)


__all__ = ["BINARIZATIONS", "BinaryWaveNet", "FRONT_ENDS", "GatedActivation", "receptive_field"]
