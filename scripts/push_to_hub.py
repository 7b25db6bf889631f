"""Publishes the released RAMiT checkpoints to the Hugging Face Hub with their model cards (`ramit push`).

    python scripts/push_to_hub.py --dry-run hub/                 # write every repository folder to hub/<preset>/
    python scripts/push_to_hub.py                                # upload them to ramit-hf/<preset> (needs a token)
    python scripts/push_to_hub.py --namespace me                 # ... to me/<preset>
    python scripts/push_to_hub.py ../shared/reference/checkpoints/RAMiT-1_X2.pth --repo-id me/ramit-x2
    python scripts/push_to_hub.py outputs/my-trained-model --namespace me   # a folder `ramit train` wrote

Without sources it pushes every released checkpoint in the shared reference folder (RAMIT_SHARED, default ../shared),
with the cards' numbers from this repository's results/ (see model_cards/generate.py). Any other `ramit push`
option works as well (`--private`, `--token`, `--overwrite`, `--commit-message`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from ramit_hf.cli import main as ramit

    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" not in argv and "--help" not in argv:
        if "--results" not in argv:
            argv += ["--results", str(REPO / "results")]
        if not _positionals(argv) and "--released" not in argv:
            shared = Path(os.environ.get("RAMIT_SHARED", REPO.parent / "shared"))
            argv += ["--released", str(shared / "reference" / "checkpoints")]
    return ramit(["push", *argv])


def _positionals(argv: list[str]) -> list[str]:
    """The arguments that are not options or option values (every `ramit push` option but the flags takes one)."""
    flags = {"--overwrite", "--private"}
    positionals, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg not in flags and "=" not in arg
        else:
            positionals.append(arg)
    return positionals


if __name__ == "__main__":
    sys.exit(main())
