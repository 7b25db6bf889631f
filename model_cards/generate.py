"""Generates the model card of every published RAMiT checkpoint: `model_cards/<preset>/README.md`.

Each card is rendered by `ramit_hf.hub.card_for_preset` from the template `src/ramit_hf/hub/model_card_template.md`, the
evaluation results in `results/*.json` (written by `ramit evaluate` / `scripts/make_results.py`; never typed by hand)
and the parameters and FLOPs measured on the model. `ramit push` renders the same card into the uploaded folder.

    python model_cards/generate.py             # write the cards
    python model_cards/generate.py --check     # exit 1 when a card differs from what the results give

Prints one line per card: its results and its measured parameters, FLOPs and MACs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(REPO / "results"), help="folder of evaluation JSON files")
    parser.add_argument("--output", default=str(REPO / "model_cards"), help="folder to write <preset>/README.md to")
    parser.add_argument("--namespace", default=None, help="Hub namespace of the repository ids (default ramit-hf)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a card is missing or stale")
    args = parser.parse_args(argv)

    from ramit_hf import RamitConfig
    from ramit_hf.atomic import write_text_atomic
    from ramit_hf.hub import (
        PUBLISHED_PRESETS,
        card_for_preset,
        load_results,
        measure_complexity,
        original_checkpoint_name,
        repo_id_for,
    )

    stale = []
    print("| card | results | parameters | FLOPs | MACs | input (W x H) |")
    print("| --- | --- | ---: | ---: | ---: | :---: |")
    for preset in PUBLISHED_PRESETS:
        card = card_for_preset(preset, args.results, args.namespace)
        path = Path(args.output) / preset / "README.md"
        results = load_results(args.results, {original_checkpoint_name(preset), preset})
        complexity = measure_complexity(RamitConfig.from_preset(preset))
        described = (
            ", ".join(
                r.dataset["name"] + (f" σ{r.protocol['sigma']}" if r.protocol.get("sigma") is not None else "")
                for r in results
            )
            or "none"
        )
        height, width = complexity.input_size
        print(
            f"| {repo_id_for(preset, args.namespace)} | {described} | {complexity.parameters:,} | "
            f"{complexity.flops / 1e9:.1f} G | {complexity.macs / 1e9:.1f} G | {width} x {height} |"
        )
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != card:
                stale.append(path)
        else:
            write_text_atomic(path, card, overwrite=True)
    if stale:
        print("stale or missing (run python model_cards/generate.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
