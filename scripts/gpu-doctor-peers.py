#!/usr/bin/env python3
"""PyTorch beside `gpulanes doctor`: the same ops, dtypes and sizes, timed
the same two ways, with every run kept, and the comparison table.

For each dtype (float32, float64), size (bytes) and op (sum: torch.sum,
mean: torch.mean, max: torch.amax) over one tensor already on the GPU:
  - isolated: `runs` calls, each between two CUDA events and synchronized
    (GPU time), and timed on the host from the call to the end of
    torch.cuda.synchronize() (wall clock);
  - back to back: `back_to_back` calls in a row with an event between each;
after at least `warmup_ms` of calls. Floors at the largest size: dst.copy_(src)
(bytes read + written) and host-to-device upload from pinned memory.
Each op is checked once against a float64 (CPU) reference.

Usage:
  gpu-doctor-peers.py --doctor doctor.json [--json peers.json]
      (sizes, dtypes, ops, runs, back-to-back count and warm-up taken from
      the gpulanes doctor report; prints gpulanes vs PyTorch)
  gpu-doctor-peers.py --sizes 16M,256M,1G [--dtypes float32,float64]
      [--ops sum,mean,max] [--runs 20] [--back-to-back 10] [--warmup-ms 300]
  [--device cpu] only tests this script (wall clock, no events).
"""

import argparse
import datetime
import json
import statistics
import sys
import time

SCHEMA = "gpulanes-doctor-peers/1"
TORCH_FN = {"sum": "sum", "mean": "mean", "max": "amax"}


def parse_size(text):
    s = text.strip().lower()
    digits = len(s) - len(s.lstrip("0123456789"))
    num, suffix = s[:digits], s[digits:]
    shift = {"": 0, "k": 10, "m": 20, "g": 30}.get(suffix)
    if not num or shift is None:
        raise ValueError(f"{text!r} is not a size (e.g. 16M, 1G)")
    return int(num) << shift


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def gbps(nbytes, ns):
    return nbytes / ns if ns and ns == ns else float("nan")


class Clock:
    """GPU times from CUDA events (None on the CPU) and wall-clock times."""

    def __init__(self, torch, device):
        self.torch = torch
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def event(self):
        if not self.cuda:
            return None
        e = self.torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def isolated(self, fn):
        """(gpu ns or None, wall ns) of one synchronized call."""
        self.sync()
        t0 = time.perf_counter_ns()
        a = self.event()
        fn()
        b = self.event()
        self.sync()
        wall = time.perf_counter_ns() - t0
        gpu = a.elapsed_time(b) * 1e6 if a is not None else None
        return gpu, wall

    def back_to_back(self, fn, count):
        """GPU ns of each of `count` calls in a row (wall ns / count on the CPU)."""
        self.sync()
        t0 = time.perf_counter_ns()
        events = [self.event()]
        for _ in range(count):
            fn()
            events.append(self.event())
        self.sync()
        wall = time.perf_counter_ns() - t0
        if events[0] is None:
            return [wall / count] * count, wall
        return [a.elapsed_time(b) * 1e6 for a, b in zip(events, events[1:])], wall


def warm(clock, fn, warmup_ms):
    clock.sync()
    end = time.perf_counter() + warmup_ms / 1e3
    while time.perf_counter() < end:
        fn()
        clock.sync()


def measure(torch, device, clock, dtype_name, nbytes, op, runs, b2b, warmup_ms, gen):
    dtype = {"float32": torch.float32, "float64": torch.float64}[dtype_name]
    n = nbytes // (4 if dtype == torch.float32 else 8)
    x = (torch.rand(n, generator=gen, dtype=dtype, device="cpu") * 2 - 1).to(device)
    f = getattr(torch, TORCH_FN[op])
    got = float(f(x).item())
    want = float(getattr(torch, TORCH_FN[op])(x.cpu().to(torch.float64)).item())
    # A sanity check, not an exactness test (PyTorch's sums are not exact):
    # max must be exact; a sum of n values in [-1, 1) is off by far less
    # than n ulps of 1.
    if op == "max":
        ok = got == want
    else:
        bound = (1e-5 if dtype == torch.float32 else 1e-13) * n / (n if op == "mean" else 1)
        ok = abs(got - want) <= bound
    check = "ok" if ok else f"off by {got - want:g}"
    call = lambda: f(x)
    warm(clock, call, warmup_ms)
    iso = [clock.isolated(call) for _ in range(runs)]
    gpu = [g for g, _ in iso if g is not None]
    wall = [w for _, w in iso]
    b2b_gpu, b2b_wall = clock.back_to_back(call, b2b) if b2b else ([], 0.0)
    del x
    return {
        "dtype": dtype_name,
        "op": op,
        "torch": f"torch.{TORCH_FN[op]}",
        "bytes": nbytes,
        "isolated_gpu_ns": gpu,
        "isolated_wall_ns": wall,
        "back_to_back_gpu_ns": b2b_gpu,
        "back_to_back_wall_ns": b2b_wall,
        "isolated_gbps": gbps(nbytes, median(gpu or wall)),
        "back_to_back_gbps": gbps(nbytes, median(b2b_gpu)) if b2b else float("nan"),
        "check": check,
    }


def floors(torch, device, clock, nbytes, runs, warmup_ms):
    n = nbytes // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    copy = lambda: dst.copy_(src)
    warm(clock, copy, warmup_ms / 4)
    c = [clock.isolated(copy) for _ in range(runs)]
    host = torch.rand(n).pin_memory() if device.type == "cuda" else torch.rand(n)
    up = lambda: dst.copy_(host, non_blocking=True)
    warm(clock, up, warmup_ms / 4)
    u = [clock.isolated(up) for _ in range(runs)]
    out = []
    for name, samples, moved in [("copy_", c, 2 * nbytes), ("upload_pinned", u, nbytes)]:
        gpu = [g for g, _ in samples if g is not None]
        wall = [w for _, w in samples]
        out.append({"name": name, "bytes": nbytes, "bytes_moved": moved, "gpu_ns": gpu,
                    "wall_ns": wall, "gbps": gbps(moved, median(gpu or wall))})
    return out


def compare(doctor, peers):
    """gpulanes (default variant) vs PyTorch, per dtype, size and op."""
    scopy = next((f["gbps"] for f, name in zip(doctor["floors"], doctor["floor_names"])
                  if name == "shader_copy"), float("nan"))
    tcopy = next((f["gbps"] for f in peers["floors"] if f["name"] == "copy_"), float("nan"))
    print(f"floors: gpulanes shader copy {scopy:.1f} GB/s, torch copy_ {tcopy:.1f} GB/s (read+write)")
    print(f"{'dtype':<8} {'op':<5} {'size':>6} {'gpulanes iso':>13} {'b2b':>8} {'torch iso':>10} {'b2b':>8}"
          f" {'x torch iso':>11} {'x b2b':>7} {'of scopy':>8}")
    lanes = {(c["dtype"], c["op"], c["bytes"]): c for c in doctor["cases"] if c["variant"] == "default"}
    verdicts = []
    for p in peers["results"]:
        c = lanes.get((p["dtype"], p["op"], p["bytes"]))
        if c is None:
            continue
        size = f"{p['bytes'] >> 20}M" if p["bytes"] < 1 << 30 else f"{p['bytes'] >> 30}G"
        r_iso = c["isolated_gbps"] / p["isolated_gbps"] if p["isolated_gbps"] else float("nan")
        r_b2b = c["back_to_back_gbps"] / p["back_to_back_gbps"] if p["back_to_back_gbps"] else float("nan")
        best = max(c["isolated_gbps"], c["back_to_back_gbps"])
        print(f"{p['dtype']:<8} {p['op']:<5} {size:>6} {c['isolated_gbps']:>13.1f} {c['back_to_back_gbps']:>8.1f}"
              f" {p['isolated_gbps']:>10.1f} {p['back_to_back_gbps']:>8.1f} {r_iso:>11.2f} {r_b2b:>7.2f}"
              f" {100 * best / scopy:>7.0f}%")
        if p["bytes"] >= 1 << 30 and p["dtype"] == "float32":
            verdicts.append((p["op"], best / scopy, min(r_iso, r_b2b)))
    # The goal for device-resident float32 at 1 GiB: >= 90% of the shader
    # copy and >= 1.0x the same PyTorch op (the worse of isolated and back
    # to back against PyTorch, the better of the two against the copy).
    for op, of_copy, vs_torch in verdicts:
        ok = of_copy >= 0.9 and vs_torch >= 1.0
        print(f"goal float32 {op} 1G: {100 * of_copy:.0f}% of shader copy, {vs_torch:.2f}x PyTorch:"
              f" {'met' if ok else 'NOT met'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--doctor", metavar="JSON", help="take the cases from this gpulanes doctor report and compare")
    ap.add_argument("--sizes", default="16M,256M,1G")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--ops", default="sum,mean,max")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--back-to-back", type=int, default=10)
    ap.add_argument("--warmup-ms", type=float, default=300)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()

    import torch

    doctor = None
    if args.doctor:
        with open(args.doctor) as f:
            doctor = json.load(f)
        cases = [c for c in doctor["cases"] if c["variant"] == "default"]
        sizes = sorted({c["bytes"] for c in cases})
        dtypes = [d for d in dict.fromkeys(c["dtype"] for c in cases) if d in ("float32", "float64")]
        ops = [o for o in dict.fromkeys(c["op"] for c in cases) if o in TORCH_FN]
        runs = max(len(c["isolated_wall_ns"]) for c in cases)
        b2b = max(len(c["back_to_back_gpu_ns"]) for c in cases) or args.back_to_back
        warmup_ms = doctor.get("warmup_ms", args.warmup_ms)
    else:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        ops = [o.strip() for o in args.ops.split(",") if o.strip()]
        runs, b2b, warmup_ms = args.runs, args.back_to_back, args.warmup_ms
    bad = [o for o in ops if o not in TORCH_FN] + [d for d in dtypes if d not in ("float32", "float64")]
    if bad:
        ap.error(f"unsupported ops or dtypes: {bad}")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu-doctor-peers: CUDA is not available", file=sys.stderr)
        return 1
    clock = Clock(torch, device)
    gen = torch.Generator().manual_seed(1)
    report = {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "timer": "cuda events" if device.type == "cuda" else "wall",
        "warmup_ms": warmup_ms,
        "floors": floors(torch, device, clock, max(sizes), runs, warmup_ms),
        "results": [],
    }
    for dtype in dtypes:
        for nbytes in sizes:
            for op in ops:
                r = measure(torch, device, clock, dtype, nbytes, op, runs, b2b, warmup_ms, gen)
                report["results"].append(r)
                print(f"torch {dtype} {op:<4} {nbytes:>11} B: iso {r['isolated_gbps']:8.1f} GB/s"
                      f" b2b {r['back_to_back_gbps']:8.1f} GB/s  {r['check']}", file=sys.stderr)
    text = json.dumps(report, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)
    if doctor is not None:
        compare(doctor, report)
    return 0 if all(r["check"] == "ok" for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
