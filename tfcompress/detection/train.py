"""Train a TinyYOLO-style detector on (images, boxes, labels) with :class:`YoloLoss`."""

import math

import numpy as np

from tfcompress._keras import keras
from tfcompress.detection.loss import YoloLoss, encode_scales, encode_targets


def fit_detector(model, images, boxes, labels, *, epochs=10, batch_size=32, learning_rate=2e-3,
                 loss=None, verbose=0, callbacks=None, strides=None):
    """Encode the targets for ``model``'s grid and train it with Adam and cosine decay.

    Args:
        model: a detector whose output is ``(N, Gh, Gw, 5 + num_classes)`` (e.g. TinyYOLO).
        images, boxes, labels: training data (see :func:`tfcompress.detection.multi_mnist`).
        epochs, batch_size, learning_rate: the schedule decays the rate to 2 % over all steps.
        loss: a :class:`YoloLoss` (default weights if None).
        strides: for a multi-scale detector with a packed ``(N, cells, 5 + C)`` output, its
            strides (finest first); the targets then come from :func:`encode_scales`.

    Returns:
        The Keras ``History``.
    """
    images = np.asarray(images, np.float32)
    num_classes = model.output_shape[-1] - 5
    if num_classes < 1:
        raise ValueError(f"The model output {model.output_shape} has no class channels; expected "
                         "(N, Gh, Gw, 5 + num_classes).")
    if strides is not None:
        y = encode_scales(boxes, labels, input_shape=images.shape[1:3], strides=strides,
                          num_classes=num_classes)
    else:
        y = encode_targets(boxes, labels, input_shape=images.shape[1:3],
                           grid_shape=model.output_shape[1:3], num_classes=num_classes)
    steps = max(1, epochs * math.ceil(len(images) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.02)
    model.compile(keras.optimizers.Adam(schedule), loss or YoloLoss())
    return model.fit(images, y, batch_size=batch_size, epochs=epochs, shuffle=True,
                     verbose=verbose, callbacks=callbacks)


__all__ = ["fit_detector"]
