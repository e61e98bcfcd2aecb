"""Is this process the ``tfcompress`` command? (Read by ``tfcompress/__init__`` at import.)

``import tfcompress`` imports every subpackage, and with them TensorFlow (several seconds), so
that each tfcompress layer and quantizer is registered with Keras as soon as the package is
imported. The ``tfcompress`` command must answer ``--help`` and argument errors before that
(well under a second), so in that process the package import stops after selecting Keras 2;
:func:`tfcompress.cli.main` parses the arguments, quiets TensorFlow's start-up messages and
then imports the rest (``tfcompress._import_api()``), before running any sub-command.

The command is recognised by how the process was started, nothing else: the console script
(``sys.argv[0]`` named ``tfcompress``, run as ``__main__``) or ``python -m tfcompress.cli``.
"""

import os
import sys

_NAMES = ("tfcompress", "tfcompress.exe", "tfcompress-script.py")


def started_as_command():
    """True when this process runs the ``tfcompress`` command line (see the module doc)."""
    argv0 = sys.argv[0] if sys.argv else ""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if os.path.basename(argv0) in _NAMES and script and os.path.basename(script) in _NAMES:
        return True
    orig = list(getattr(sys, "orig_argv", ()))      # the interpreter's own arguments (3.10+)
    i = 1
    while i < len(orig):
        arg = orig[i]
        if arg == "-m":
            return i + 1 < len(orig) and orig[i + 1] == "tfcompress.cli"
        if arg == "-c" or arg == "-" or not arg.startswith("-"):
            return False                            # -c code, stdin or a script comes first
        i += 2 if arg in ("-X", "-W", "--check-hash-based-pycs") else 1
    return False
