"""TinyYOLO training targets and loss.

Assignment (anchor-free, one grid): a ground-truth box is assigned to the cell containing its
centre; that cell's targets are the centre offset inside the cell ``(cx / s - j, cy / s - i)``
in [0, 1), the log size ``(log(w / s), log(h / s))``, objectness 1 and the one-hot class
(``s`` = stride). When two boxes fall in the same cell the larger one is kept (this cannot
happen for :func:`~tfcompress.detection.multi_mnist` canvases whose digits are at least one
stride wide, since their boxes never overlap).

Loss per image (:class:`YoloLoss`): ``box_weight * sum_pos [(sigmoid(t_xy) - xy)^2 +
(t_wh - log wh)^2] + obj_weight * sum_cells BCE(obj) + cls_weight * sum_pos CE(cls)``.
"""

import numpy as np

from tfcompress._keras import keras, tf


def encode_targets(boxes, labels, *, input_shape, grid_shape, num_classes):
    """Targets ``(N, Gh, Gw, 5 + num_classes)`` for :class:`YoloLoss` (see module docstring).

    Raises ``ValueError`` for a label outside ``[0, num_classes)`` or a box of zero size.
    """
    h, w = int(input_shape[0]), int(input_shape[1])
    gh, gw = int(grid_shape[0]), int(grid_shape[1])
    if h % gh or w % gw or h // gh != w // gw:
        raise ValueError(f"Input {h}x{w} is not a whole multiple of the {gh}x{gw} grid.")
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} box lists but {len(labels)} label lists.")
    s = h // gh
    y = np.zeros((len(boxes), gh, gw, 5 + num_classes), np.float32)
    area = np.zeros((len(boxes), gh, gw), np.float32)
    for n, (b, l) in enumerate(zip(boxes, labels)):
        b = np.asarray(b, np.float32).reshape(-1, 4)
        l = np.asarray(l).reshape(-1)
        if len(b) != len(l):
            raise ValueError(f"Image {n} has {len(b)} boxes but {len(l)} labels.")
        for (x1, y1, x2, y2), c in zip(b, l):
            if not 0 <= c < num_classes:
                raise ValueError(f"Image {n}: label {c} is outside [0, {num_classes}).")
            bw, bh = x2 - x1, y2 - y1
            if bw <= 0 or bh <= 0:
                raise ValueError(f"Image {n}: box {[x1, y1, x2, y2]} has zero size.")
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            j, i = min(int(cx // s), gw - 1), min(int(cy // s), gh - 1)
            if area[n, i, j] >= bw * bh:
                continue
            area[n, i, j] = bw * bh
            y[n, i, j, :] = 0.0
            y[n, i, j, :5] = (cx / s - j, cy / s - i, np.log(bw / s), np.log(bh / s), 1.0)
            y[n, i, j, 5 + int(c)] = 1.0
    return y


def encode_scales(boxes, labels, *, input_shape, strides, num_classes, size_limits=None):
    """Packed targets ``(N, sum_s (H / s)(W / s), 5 + num_classes)`` for a multi-scale head.

    Each box goes to one scale by its size (FCOS-style ranges, Tian et al., ICCV 2019, arXiv
    1904.01355): with ``strides`` finest first, a box whose longer side is at most
    ``size_limits[i]`` (and above the previous limit) is assigned to scale ``i``; the last
    scale takes the rest. Default limits ``8 * strides[i]`` (FCOS: each level covers sizes up
    to 8 strides). Within a scale the targets are :func:`encode_targets`'; the grids are
    flattened row-major and concatenated in the order of ``strides`` (the layout of
    :class:`tfcompress.nas.supernet.TwoScaleHead`; :func:`tfcompress.detection.split_scales`
    undoes it).
    """
    strides = [int(s) for s in strides]
    if not strides or sorted(strides) != strides or len(set(strides)) != len(strides):
        raise ValueError(f"strides must be increasing (finest first), got {strides!r}.")
    limits = [8.0 * s for s in strides[:-1]] if size_limits is None else [float(v) for v in size_limits]
    if len(limits) != len(strides) - 1:
        raise ValueError(f"size_limits needs {len(strides) - 1} value(s) (one per boundary "
                         f"between the {len(strides)} scales), got {size_limits!r}.")
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} box lists but {len(labels)} label lists.")
    h, w = int(input_shape[0]), int(input_shape[1])
    per_scale = [([], []) for _ in strides]
    for n, (b, l) in enumerate(zip(boxes, labels)):
        b = np.asarray(b, np.float32).reshape(-1, 4)
        l = np.asarray(l).reshape(-1)
        if len(b) != len(l):
            raise ValueError(f"Image {n} has {len(b)} boxes but {len(l)} labels.")
        side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        scale = np.searchsorted(np.asarray(limits), side, side="left")
        for i, (bs, ls) in enumerate(per_scale):
            bs.append(b[scale == i])
            ls.append(l[scale == i])
    parts = []
    for s, (bs, ls) in zip(strides, per_scale):
        if h % s or w % s:
            raise ValueError(f"Stride {s} does not divide the input {h}x{w}.")
        y = encode_targets(bs, ls, input_shape=(h, w), grid_shape=(h // s, w // s),
                           num_classes=num_classes)
        parts.append(y.reshape(len(boxes), -1, y.shape[-1]))
    return np.concatenate(parts, axis=1)


@keras.utils.register_keras_serializable(package="tfcompress")
class YoloLoss(keras.losses.Loss):
    """TinyYOLO loss on raw outputs and :func:`encode_targets` targets (per-image sums, averaged
    over the batch); also on packed multi-scale ``(N, cells, 5 + C)`` outputs and
    :func:`encode_scales` targets (the sums run over all cells of all scales)."""

    def __init__(self, box_weight=5.0, obj_weight=1.0, cls_weight=1.0, name="yolo_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        for key, v in (("box_weight", box_weight), ("obj_weight", obj_weight),
                       ("cls_weight", cls_weight)):
            if not float(v) >= 0:
                raise ValueError(f"{key} must be >= 0, got {v!r}.")
        self.box_weight, self.obj_weight, self.cls_weight = (float(box_weight), float(obj_weight),
                                                             float(cls_weight))

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        pos = y_true[..., 4]
        cells = list(range(1, len(pos.shape)))       # [1, 2] for grids, [1] for packed scales
        xy = tf.reduce_sum(tf.square(tf.sigmoid(y_pred[..., :2]) - y_true[..., :2]), -1)
        wh = tf.reduce_sum(tf.square(y_pred[..., 2:4] - y_true[..., 2:4]), -1)
        box = tf.reduce_sum(pos * (xy + wh), axis=cells)
        obj = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=pos, logits=y_pred[..., 4]),
                            axis=cells)
        ce = tf.nn.softmax_cross_entropy_with_logits(labels=y_true[..., 5:], logits=y_pred[..., 5:])
        cls = tf.reduce_sum(pos * ce, axis=cells)
        return self.box_weight * box + self.obj_weight * obj + self.cls_weight * cls

    def get_config(self):
        return {**super().get_config(), "box_weight": self.box_weight,
                "obj_weight": self.obj_weight, "cls_weight": self.cls_weight}


__all__ = ["YoloLoss", "encode_scales", "encode_targets"]
