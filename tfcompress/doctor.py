"""``tfcompress doctor``: is this installation able to compress, convert and run models?

Each check returns ``(name, status, detail)`` with status ``ok``, ``warn`` or ``fail``; the
command exits non-zero when any check fails. Missing datasets are warnings (users may bring
their own data) unless ``require_data`` is set.
"""

import json
import sys

import numpy as np

REQUIRED = {
    "tensorflow": "2.21.0", "tf-keras": "2.21.0", "larq": "0.14.0",
    "larq-compute-engine": "0.16.0", "tensorflow-model-optimization": "0.8.1",
    "ai-edge-litert": "2.3.0", "numpy": "1.26.4",
}
OPTIONAL = {"tflite-micro": None}


def _check_versions():
    from tfcompress.report.tables import package_versions

    found = package_versions(tuple(REQUIRED) + tuple(OPTIONAL))
    for name, version in found.items():
        pinned = REQUIRED.get(name)
        if version is None:
            status = "fail" if name in REQUIRED else "warn"
            yield name, status, "not installed" + ("" if name in REQUIRED else " (micro target unavailable)")
        elif pinned and version != pinned:
            yield name, "warn", f"{version} (tested with {pinned})"
        else:
            yield name, "ok", version


def _tiny_models():
    import larq as lq

    from tfcompress._keras import keras

    keras.utils.set_random_seed(0)
    plain = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    binary = keras.Sequential([
        keras.Input((8, 8, 4)),
        lq.layers.QuantConv2D(32, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip", use_bias=False),
        keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D(),
    ])
    return plain, binary


def _check_runtimes():
    from tfcompress.conversion import convert

    try:
        plain, binary = _tiny_models()
    except Exception as err:  # report, don't crash: this is the diagnostic tool
        yield "larq layers", "fail", f"{type(err).__name__}: {err}"
        return
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32)
    xb = rng.uniform(-1, 1, (4, 8, 8, 4)).astype(np.float32)
    cases = (
        ("ai-edge-litert runs float TFLite", plain, dict(target="float32"), x),
        ("ai-edge-litert runs int8 TFLite", plain, dict(target="int8", representative_data=x), x),
        ("LCE interpreter runs LCE models", binary, dict(target="lce"), xb),
        ("tfcompress kernels run LCE models in ai-edge-litert", binary, dict(target="lce"), xb),
        ("tflite-micro runs int8 models", plain,
         dict(target="int8", representative_data=x, io_type="float32"), x),
    )
    for name, model, options, data in cases:
        kernels = "tfcompress kernels" in name
        if kernels:
            from tfcompress import _kernels

            if not _kernels.available():   # optional compiled extension: warn, don't fail
                yield name, "warn", f"unavailable: {_kernels.unavailable_reason()}"
                continue
        try:
            result = convert(model, **options)
            runtime = ("micro" if "micro" in name else "tfcompress" if kernels
                       else "lce" if "LCE interpreter" in name else None)
            kwargs = {"runtime": runtime} if runtime else {}
            rep = result.verify(data, latency_runs=0, **kwargs)
            tol = 0.1 if "int8" in name else 1e-4
            status = "ok" if rep.max_abs_diff <= tol else "fail"
            kernel = f", {rep.kernel}" if kernels else ""
            where = f"{rep.runtime}{kernel}"
            yield name, status, f"max |diff| vs Keras {rep.max_abs_diff:.2g} ({where})"
        except Exception as err:
            status = "warn" if "micro" in name else "fail"
            yield name, status, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"


def _check_auto_runtime():
    from tfcompress import _kernels

    if _kernels.available():
        yield ("runtime='auto' for LCE files", "ok",
               f"tfcompress kernels ({_kernels.best_isa()}), LCE's interpreter as fallback")
    else:
        yield ("runtime='auto' for LCE files", "warn",
               f"LCE's interpreter (slower on x86): tfcompress kernels "
               f"{_kernels.unavailable_reason()}")


def _check_keras():
    try:
        from tfcompress._keras import tf

        module = tf.keras.Model.__module__
        ok = module.startswith("tf_keras")
        yield "Keras 2 (tf_keras) active", "ok" if ok else "fail", module
    except Exception as err:
        yield "Keras 2 (tf_keras) active", "fail", f"{type(err).__name__}: {err}"
        return
    for mod in ("larq", "tensorflow_model_optimization"):
        try:
            __import__(mod)
            yield f"import {mod}", "ok", ""
        except Exception as err:
            yield f"import {mod}", "fail", f"{type(err).__name__}: {err}"


def _check_data(require_data):
    from tfcompress.data import DATASETS, find_dataset_dir
    from tfcompress.errors import DataError

    for name in DATASETS:
        try:
            folder, files = find_dataset_dir(name)
            yield f"data: {name}", "ok", f"{folder} ({', '.join(files)})"
        except DataError as err:
            yield f"data: {name}", "fail" if require_data else "warn", str(err)


def run_checks(require_data=False):
    checks = [("python", "ok", sys.version.split()[0])]
    for group in (_check_versions(), _check_keras(), _check_runtimes(), _check_auto_runtime(),
                  _check_data(require_data)):
        checks.extend(group)
    return checks


def main(as_json=False, require_data=False, stream=None):
    stream = stream or sys.stdout
    checks = run_checks(require_data)
    failed = [c for c in checks if c[1] == "fail"]
    if as_json:
        stream.write(json.dumps({"ok": not failed, "checks": [
            {"check": n, "status": s, "detail": d} for n, s, d in checks]}, indent=2) + "\n")
    else:
        width = max(len(n) for n, _, _ in checks)
        for name, status, detail in checks:
            stream.write(f"{status.upper():4}  {name:{width}}  {detail}\n")
        stream.write("all checks passed\n" if not failed else
                     f"{len(failed)} check(s) failed: {', '.join(n for n, _, _ in failed)}\n")
    return 1 if failed else 0
