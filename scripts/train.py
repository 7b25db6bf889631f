#!/usr/bin/env python
"""Train RAMiT with a recipe: the same options as `ramit train` (see `ramit train --help`, docs/training.md).

Runs as a plain script or under a launcher, e.g. `torchrun --nproc_per_node 2 scripts/train.py --recipe color-dn ...`
or `accelerate launch scripts/train.py ...`.
"""

import sys

from ramit_hf.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
