"""smalto vs transformers: training step, prefill, decode, drawing and the roofline, in one run.

    python bench/speed.py [--quick] [--json FILE]     # the same as `smalto bench`

The measurements live in smalto/apps/bench.py so that the installed `smalto bench` runs them too.
"""

import sys

from smalto.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
