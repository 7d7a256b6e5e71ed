"""Where an eager training step of HLR / HLR++ goes, and two levers on it: the history pools'
sampling time, torch.profiler's top operators over ``--steps`` steps, and each step timed plain
and under ``torch.autocast("cpu", torch.bfloat16)``, interleaved on the same batches (dense Adam,
batch 1000, P = 50, ``--negatives`` per positive; 1 = the published recipe). docs/performance.md
quotes it (the last lines time the slot-logit GEMM alone):

    python benchmarks/hlr_step_probe.py --dataset ml-1m --model hlr [--negatives 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import common
from hlrm.data.matrix import SplitData
from hlrm.models import create_model
from hlrm.training.trainer import TrainConfig, Trainer, epoch_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--model", default="hlr")
    parser.add_argument("--negatives", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split: SplitData = common.load(args.dataset)
    torch.manual_seed(0)
    model = create_model(args.model, split.n_users, split.n_items, history_size=50)
    recipe = {**common.PUBLISHED_RECIPE, "negatives": args.negatives}
    trainer = Trainer(model, split, TrainConfig(epochs=1, batch_size=1000, lr=1e-3, **recipe),
                      seed=0, progress=False)  # fmt: skip
    model.train()
    epoch = trainer.train_batches.epoch(epoch_generator(0, 1, trainer.device))
    sampled = []
    batches = []
    for _ in range(2 * args.steps + 2):
        started = time.perf_counter()
        batches.append(next(epoch))
        sampled.append(time.perf_counter() - started)
    sampling = 1000 * np.median(sampled)
    print(f"{args.model}: pairs, negatives and pools of a batch: {sampling:.1f} ms")

    def step(batch, bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = trainer._step_loss(*trainer._share(batch))
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        model.after_step(None)

    for batch in batches[:2]:
        step(batch, False)
        step(batch, True)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for batch in batches[2 : 2 + args.steps]:
            step(batch, False)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for batch in batches[2 + args.steps :]:
        for bf16 in (False, True):
            started = time.perf_counter()
            step(batch, bf16)
            seconds[bf16].append(time.perf_counter() - started)
    ratio = np.median(np.array(seconds[False]) / np.array(seconds[True]))
    plain, bf16 = (1000 * np.median(seconds[flag]) for flag in (False, True))
    print(
        f"{args.model}, {args.negatives} negative(s): float32 {plain:.1f} ms, "
        f"bf16 autocast {bf16:.1f} ms a step ({ratio:.2f}×)"
    )
    slot_logit_gemm(args.threads)


def slot_logit_gemm(threads: int) -> None:
    """The slot-logit GEMM of a published-recipe HLR batch alone, (1000, 51, 100) × (1000, 100,
    40): GFLOP/s of the forward product and of its two backward products, float32 and bf16."""
    shapes = {"forward": ((51, 100), (100, 40)), "backward 1": ((51, 40), (40, 100)),
              "backward 2": ((100, 51), (51, 40))}  # fmt: skip
    for dtype in (torch.float32, torch.bfloat16):
        rates = []
        for (m, k), (_, n) in shapes.values():
            a, b = torch.randn(1000, m, k, dtype=dtype), torch.randn(1000, k, n, dtype=dtype)
            torch.bmm(a, b)
            started = time.perf_counter()
            for _ in range(20):
                torch.bmm(a, b)
            rates.append(2 * 1000 * m * k * n * 20 / (time.perf_counter() - started) / 1e9)
        shown = ", ".join(f"{name} {rate:.0f}" for name, rate in zip(shapes, rates, strict=True))
        print(f"slot-logit GEMM, {dtype}, {threads} threads: {shown} GFLOP/s")


if __name__ == "__main__":
    main()
