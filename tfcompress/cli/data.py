"""The data a command runs on: a built-in dataset's test split or the user's own arrays."""

from tfcompress.cli.common import DATASET_SHAPES, DATASETS, CliError, existing

__all__ = ["builtin_layout", "check_data_option", "is_user_data", "load_user_arrays",
           "model_input", "subset", "verify_data"]


def is_user_data(value):
    return value is not None and value not in DATASETS


def check_data_option(value, option="--data"):
    if value is None or value in DATASETS:
        return
    if not value.lower().endswith((".npz", ".npy")):
        raise CliError(
            f"{option} {value!r} is neither a built-in dataset nor a .npz/.npy file.",
            f"use one of {', '.join(DATASETS)}, or your own arrays saved with "
            "numpy.savez('data.npz', x=inputs, y=labels) (or numpy.save('x.npy', inputs))")
    existing(value, f"{option} file", (".npz", ".npy"))


def load_user_arrays(path, option="--data"):
    """``x`` (and ``y`` if present) from a ``.npz`` (keys ``x``, ``y``) or a ``.npy`` file."""
    import zipfile

    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise CliError(f"{option} file {path} could not be read: {err}") from err
    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded:
        if "x" not in loaded.files:
            raise CliError(
                f"{option} file {path} holds the arrays {sorted(loaded.files)} but no 'x'.",
                "save it as numpy.savez(path, x=inputs, y=labels); y is optional")
        x = loaded["x"]
        y = loaded["y"] if "y" in loaded.files else None
    if y is not None and len(y) != len(x):
        raise CliError(f"{option} file {path}: x has {len(x)} examples but y has {len(y)}.")
    return x, y


def model_input(info):
    if len(info.inputs) != 1:
        raise CliError(
            f"this model has {len(info.inputs)} inputs; --data gives one array.",
            "verify models with several inputs in Python: tfcompress.verify(file, [x1, x2], y)")
    return info.inputs[0]


def builtin_layout(name, spec):
    """How a built-in dataset's examples map to the model's input: ``None`` (as they are),
    ``"add"``/``"drop"`` (a trailing channel axis of size 1, the datasets' documented
    conventions); anything else is the wrong dataset for this model (an error)."""
    want = tuple(spec["shape"])
    example = want[1:] if want and want[0] == 1 else want
    have = DATASET_SHAPES[name]
    if have == example:
        return None
    if example == have + (1,):
        return "add"
    if have == example + (1,):
        return "drop"
    raise CliError(
        f"the model takes inputs of shape {example}, but --data {name} holds examples of shape "
        f"{have}.",
        f"use the dataset the model was trained on ({', '.join(DATASETS)}), or pass your own "
        "arrays as --data file.npz (keys x, y)")


def subset(x, y, limit):
    """``limit`` examples: the same number of each class when there are labels, else a seeded
    random subset; returns ``x, y`` and a description."""
    import numpy as np

    from tfcompress.data import balanced_indices, class_labels, random_indices

    if limit is None or limit >= len(x):
        return x, y, f"all {len(x)} examples"
    labels = None if y is None else class_labels(y)
    if labels is not None:
        idx = balanced_indices(labels, limit)
        counts = np.bincount(labels[idx])
        counts = counts[counts > 0]
        per = (f"{counts.min()}" if counts.min() == counts.max()
               else f"{counts.min()}-{counts.max()}")
        how = f"class-balanced: {per} of each of {len(counts)} classes"
    else:
        idx = random_indices(len(x), limit, seed=0)
        how = "a seeded random subset (seed 0)"
    return x[idx], (None if y is None else y[idx]), f"{len(idx)} of {len(x)} examples ({how})"


def verify_data(args, spec):
    if is_user_data(args.data):
        x, y = load_user_arrays(args.data)
        source = args.data
    else:
        from tfcompress.data import load
        from tfcompress.data.preprocess import for_model

        layout = builtin_layout(args.data, spec)        # before decoding anything
        _, (x, y) = load(args.data, data_dir=args.data_dir)
        x = for_model(args.data, x)
        x = x[..., None] if layout == "add" else x[..., 0] if layout == "drop" else x
        source = f"{args.data} test split"
    x, y, how = subset(x, y, args.limit)
    return x, y, f"{source}, {how}"

