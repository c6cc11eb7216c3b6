"""Entry point for `accelerate launch scripts/train.py …`; the loop is `hf_illusions/train/loop.py`.

The loop lives in the package so that `hf-illusions train` runs the very same code; read it
there (one flat function, `main`). Running through the CLI gives the same one-line errors
(``--debug`` for the traceback).
"""

import sys

from hf_illusions.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
