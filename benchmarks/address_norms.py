"""Why the slot addresses of a relation model stay flat, measured on a trained run: quantiles of
the embedding norms, of ``||a ⊙ b||`` for random (user, item) and (item, item) pairs (what
``softmax((a ⊙ b) K)`` addresses), and for LRML / HLR / HLR++ runs of the key norms and of the
largest spread of a pair's slot logits. docs/results.md ("Is the attention used?") quotes it:

    python benchmarks/address_norms.py RUN_DIR [--pairs 20000]

It answers two of the accuracy issue's candidate fixes without training: *normalising the
addressed vectors* (with unit-norm embeddings, ``a / ||a||`` changes nothing; scaling the product
``a ⊙ b`` to unit norm multiplies every slot logit by ``1 / ||a ⊙ b||``, which the quantiles show
to be nearly one constant, i.e. an ``address_scale``) and *key initialisation* (keys drawn c times
larger are ``address_scale = c`` at the first step).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hlrm.runs import Run

QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99)


def quantiles(values: torch.Tensor) -> str:
    points = torch.quantile(values.double(), torch.tensor(QUANTILES, dtype=torch.double))
    return " / ".join(f"{float(point):.4g}" for point in points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = Run.open(args.run_dir).model
    users = model.user_embeddings.detach()
    items = model.item_embeddings.detach()
    generator = torch.Generator().manual_seed(args.seed)

    def draw(table: torch.Tensor) -> torch.Tensor:
        return table[torch.randint(len(table), (args.pairs,), generator=generator)]

    print(f"# {args.run_dir} ({model.name}, d = {users.shape[1]}); quantiles {QUANTILES}")
    print(f"user norms: {quantiles(users.norm(dim=1))}")
    print(f"item norms: {quantiles(items.norm(dim=1))}")
    pairs = {"user x item": (draw(users), draw(items)), "item x item": (draw(items), draw(items))}
    for label, (a, b) in pairs.items():
        print(f"||a * b||, {label}: {quantiles((a * b).norm(dim=1))}")
    memory = getattr(model, "lram", None)
    if memory is None:
        return
    keys = memory.scaled_keys.detach()  # (d, N), address scale folded in
    print(f"key norms (address scale included): {quantiles(keys.norm(dim=0))}")
    for label, (a, b) in pairs.items():
        logits = (a * b) @ keys
        spread = logits.amax(1) - logits.amin(1)
        print(f"slot-logit spread (max - min over the N slots), {label}: {quantiles(spread)}")


if __name__ == "__main__":
    main()
