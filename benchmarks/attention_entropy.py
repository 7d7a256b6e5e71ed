"""How far a trained relation model's attention is from uniform: the mean normalised entropy
(1 = uniform) of each attention module over the top-10 lists of 200 test users
(``hlrm.evaluation.diagnostics.attention_entropy``), and the address and attention scales the
model uses (learned with ``learn_scales``). docs/results.md ("Is the attention used?") quotes it:

    python benchmarks/attention_entropy.py RUN_DIR [RUN_DIR ...] [--users 200]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hlrm.evaluation.diagnostics import attention_entropy
from hlrm.runs import Run


def scales(model) -> dict[str, float]:
    """The memory's (address, attention) logit scales; empty for models without a memory."""
    memory = getattr(model, "lram", None)
    if memory is None:
        return {}
    address, attention = memory.scales
    return {"address_scale": round(address, 4), "attention_scale": round(attention, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for run_dir in args.run_dirs:
        run = Run.open(run_dir)
        entropy = attention_entropy(run.model, run.split, users=args.users, seed=args.seed)
        row = {"run": str(run_dir), **{key: round(value, 4) for key, value in entropy.items()}}
        print(json.dumps({**row, **scales(run.model)}), flush=True)


if __name__ == "__main__":
    main()
