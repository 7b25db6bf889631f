"""Convert an original RAMiT checkpoint to a Hugging Face model folder (same as `ramit convert`)."""

import sys

from ramit_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
