"""Load test of ``hlrm serve`` on loopback: requests/s and latency, single vs micro-batched.

For each run directory the real server is started twice in subprocesses on free loopback ports
(``hlrm serve RUN --port 0``): once scoring every request on its own (``--no-batching``,
"single") and once micro-batched (the default), and both are warmed up. Then for each
concurrency level C, C clients (asyncio connections with HTTP/1.1 keep-alive, in this process)
send ``GET /recommend`` for random known users (k = 10, no explanations unless ``--explain``;
exact ranking unless ``--ann``) back to back until ``--requests`` answers arrived or
``--seconds`` passed, whichever is first, to one server and then the other, ``--repeats``
times interleaved, so both modes see the same background load (the machine may be shared:
the load average is recorded). Reported per row: medians over the repeats of requests per
second, its ratio to single's median (the JSON line of a batched row also lists the ratio of
each interleaved pair), p50 and p99 latency (from sending the request to reading the whole
answer). Every answer must be 200. Client and server share the machine.

    python benchmarks/serve.py RUN_DIR [RUN_DIR ...] --clients 1,8,64 --requests 2000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hlrm.config import RunConfig
from hlrm.data.matrix import SplitData


def start_server(run_dir: Path, extra: list[str]) -> tuple[subprocess.Popen, str, int]:
    script = shutil.which("hlrm", path=str(Path(sys.executable).parent)) or shutil.which("hlrm")
    command = [script, "serve", str(run_dir), "--port", "0", "--device", "cpu", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    line = process.stdout.readline()
    if " at http://" not in line:
        process.kill()
        raise SystemExit(f"the server did not start: {line}")
    address = line.split(" at http://")[1].split("/")[0]
    host, port = address.rsplit(":", 1)
    return process, host, int(port)


async def client(host: str, port: int, paths, latencies: list[float], stop: dict) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while not stop["now"]:
            request = f"GET {next(paths)} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if status != 200:
                raise SystemExit(f"answer {status} to {request!r}")
            latencies.append(time.perf_counter() - started)
            if len(latencies) >= stop["requests"] or time.perf_counter() > stop["deadline"]:
                stop["now"] = True
    finally:
        writer.close()


async def load(host, port, users, clients, requests, seconds, explain, seed) -> dict:
    rng = np.random.default_rng(seed)
    query = "&explain=true" if explain else ""

    def paths():
        while True:
            yield f"/recommend?user={users[rng.integers(len(users))]}&k=10{query}"

    latencies: list[float] = []
    stop = {"now": False, "requests": requests, "deadline": time.perf_counter() + seconds}
    generator = paths()
    started = time.perf_counter()
    await asyncio.gather(*(client(host, port, generator, latencies, stop) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    values = np.array(latencies) * 1000.0
    return {
        "requests": len(values),
        "seconds": elapsed,
        "rps": len(values) / elapsed,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--requests", type=int, default=2000, help="per row, at most")
    parser.add_argument("--seconds", type=float, default=30.0, help="per row, at most")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--modes", default="single,batched")
    parser.add_argument(
        "--ann", action="store_true", help="serve with two-stage retrieval (hlrm serve --ann)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    levels = [int(part) for part in args.clients.split(",")]
    print(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                "date": dt.date.today().isoformat(),
                "load_average": os.getloadavg()[0],  # the machine may be shared
                "requests": args.requests,
                "seconds": args.seconds,
                "explain": args.explain,
                "retrieval": "ann" if args.ann else "exact",
            }
        )
    )
    modes = args.modes.split(",")
    rows = []
    for run_dir in args.run_dirs:
        split = SplitData.load(str(run_dir / "split.npz"))
        users = [str(u) for u in split.user_ids]
        model = RunConfig.from_toml(run_dir / "config.toml").model.name
        servers = {}
        try:
            for mode in modes:  # both servers up at once, measured in turn under the same load
                extra = ["--no-batching"] if mode == "single" else []
                servers[mode] = start_server(run_dir, extra + (["--ann"] if args.ann else []))
                _, host, port = servers[mode]
                asyncio.run(load(host, port, users, 4, args.warmup, 60, args.explain, 1))
            for clients in levels:
                results: dict[str, list[dict]] = {mode: [] for mode in modes}
                for repeat in range(args.repeats):
                    for mode in modes:
                        _, host, port = servers[mode]
                        result = asyncio.run(
                            load(host, port, users, clients, args.requests, args.seconds,
                                 args.explain, args.seed + repeat)
                        )  # fmt: skip
                        result["load_average"] = os.getloadavg()[0]
                        print(json.dumps({"model": model, "mode": mode, "clients": clients,
                                          "repeat": repeat, **result}), flush=True)  # fmt: skip
                        results[mode].append(result)
                for mode in modes:
                    row = {"model": model, "mode": mode, "clients": clients}
                    for key in ("requests", "rps", "p50_ms", "p99_ms", "load_average"):
                        row[key] = float(np.median([r[key] for r in results[mode]]))
                    if mode != modes[0]:
                        base = float(np.median([r["rps"] for r in results[modes[0]]]))
                        row["rps_ratio"] = row["rps"] / base
                        paired = [
                            mine["rps"] / other["rps"]
                            for mine, other in zip(results[mode], results[modes[0]], strict=True)
                        ]
                        row["paired_ratios"] = paired
                        print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            for process, _, _ in servers.values():
                process.send_signal(signal.SIGTERM)  # uvicorn shuts down quietly
                process.wait(timeout=60)
    print(f"medians of {args.repeats} interleaved repeats")
    print("| model | serving | clients | req/s | ratio to single | p50 ms | p99 ms | load avg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        ratio = f"{row['rps_ratio']:.2f}×" if "rps_ratio" in row else "1"
        print(
            f"| {row['model']} | {row['mode']} | {row['clients']} | {row['rps']:.1f} | {ratio} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['load_average']:.1f} |"
        )


if __name__ == "__main__":
    main()
