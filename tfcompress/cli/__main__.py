"""``python -m tfcompress.cli``: the same as the ``tfcompress`` command."""

import sys

from tfcompress.cli import main

sys.exit(main())
