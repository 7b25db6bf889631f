"""`python -m ramit_hf.cli ...` (as under `torchrun`) runs the `ramit` command."""

import sys

from . import main

sys.exit(main())
