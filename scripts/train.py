"""Entry point for `accelerate launch scripts/train.py …`; the loop is `hf_illusions/train.py`.

The loop lives in the package so that `hf-illusions train` runs the very same code; read it
there (one flat function, `main`).
"""

from hf_illusions.train import main

if __name__ == "__main__":
    main()
