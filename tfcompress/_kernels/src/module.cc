// Makes the kernel library importable as tfcompress._kernels._lce_kernels (so
// pip builds it like any extension and Python can check it loads); the
// delegate itself is loaded with ctypes through its C entry points.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef kModule = {
    PyModuleDef_HEAD_INIT, "_lce_kernels",
    "tfcompress's LCE-op kernels for ai-edge-litert (loaded as a TFLite delegate).", -1, nullptr,
};

PyMODINIT_FUNC PyInit__lce_kernels(void) { return PyModule_Create(&kModule); }
