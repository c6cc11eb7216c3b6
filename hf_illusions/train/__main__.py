"""``python -m hf_illusions.train …``: runs the training loop, :func:`~hf_illusions.train.loop.main`."""

from hf_illusions.train.loop import main

if __name__ == "__main__":
    main()
