"""``python -m hf_illusions.cli …`` (e.g. under ``accelerate launch``): the ``hf-illusions`` command."""

import sys

from hf_illusions.cli import main

sys.exit(main())
