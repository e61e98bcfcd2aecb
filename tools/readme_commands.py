"""Print the README's two commands (install + main job, then tests), one per line.

``.ci/run`` executes exactly what this prints, so the README and CI cannot drift apart: the
commands are the first two ```bash blocks under the README heading "## The two commands", each
one line. ``tests/test_readme.py`` checks the shape; ``python tools/readme_commands.py --which
test`` prints only the test command.
"""

import argparse
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## The two commands"


def readme_commands(text=None):
    """Return ``{"main": ..., "test": ...}`` from the README text.

    Raises:
        ValueError: the section is missing, or does not hold two one-line bash blocks.
    """
    text = README.read_text() if text is None else text
    start = text.find(HEADING)
    if start < 0:
        raise ValueError(f"README has no {HEADING!r} section.")
    section = text[start + len(HEADING):]
    end = section.find("\n## ")
    section = section if end < 0 else section[:end]
    blocks = [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S)]
    if len(blocks) != 2 or any("\n" in b or not b for b in blocks):
        raise ValueError(f"{HEADING!r} must hold exactly two one-line ```bash blocks, found "
                         f"{blocks!r}.")
    return {"main": blocks[0], "test": blocks[1]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--which", choices=("main", "test", "both"), default="both",
                   help="which command to print (default: both, main first)")
    args = p.parse_args(argv)
    try:
        cmds = readme_commands()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    keys = ("main", "test") if args.which == "both" else (args.which,)
    print("\n".join(cmds[k] for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
