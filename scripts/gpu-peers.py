#!/usr/bin/env python3
"""PyTorch peers for `gpulanes bench`: torch.sum, torch.mean and torch.amax
over the same sizes and partition shapes, timed the same way, printed as JSON.

For each op and size (bytes of float32):
  - device, whole:      torch.sum(x)            x already on the GPU
  - device, partitions: torch.sum(x.view(-1, p), dim=1)  (same for mean/amax)
  - host:               torch.sum(h.to(dev)).item()  from a CPU tensor
                        (upload included, wall clock; like gpulanes' host rows)
  - group-by (the gpulanes report's group_by rows): index_add_ (sum),
    scatter_reduce_ (amax) and bincount (count) over int64 keys
Device rows are timed with CUDA events around each call after warm-up,
rotating over several input tensors (so the L2 cache does not flatter the
result); the median of many runs is reported. Every op is first checked
against a float64 reference on the same data.

Floors measured in the same run: device copy (dst.copy_(src), bytes read +
written), host-to-device upload (pinned and pageable), and the round trips
(torch.cuda.synchronize() with nothing queued; .item() of one element).

Usage:
  gpu-peers.py --sizes 4K,1M,1G --partitions 64,4K,1M [--ops sum,mean,max]
  gpu-peers.py --from-gpulanes gpulanes.json     # same sizes/partitions/ops
  [--json FILE] (default: stdout)  [--quick]  [--device cpu] (testing only)
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

SCHEMA = "gpulanes-peers/1"
TORCH_FN = {"sum": "torch.sum", "mean": "torch.mean", "max": "torch.amax"}


def parse_size(text):
    s = text.strip().lower()
    digits = len(s) - len(s.lstrip("0123456789"))
    num, suffix = s[:digits], s[digits:].strip()
    if not num:
        raise ValueError(f"{text!r} is not a size")
    shift = {"": 0, "b": 0, "k": 10, "kb": 10, "kib": 10, "m": 20, "mb": 20,
             "mib": 20, "g": 30, "gb": 30, "gib": 30}.get(suffix)
    if shift is None:
        raise ValueError(f"{text!r}: unknown suffix {suffix!r}")
    return int(num) << shift


def parse_list(text):
    return [parse_size(s) for s in text.split(",") if s.strip()]


def label(n):
    for shift, suffix in ((30, "G"), (20, "M"), (10, "K")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


def summarize(samples_ns):
    s = sorted(samples_ns)
    n = len(s)
    q = lambda p: s[min(n - 1, round(p * (n - 1)))]
    return {
        "runs": n,
        "median_ns": statistics.median(s),
        "min_ns": s[0],
        "p10_ns": q(0.10),
        "p90_ns": q(0.90),
        "p99_ns": q(0.99),
        "max_ns": s[-1],
    }


class Budget:
    def __init__(self, warmup, min_runs, max_runs, target_s):
        self.warmup, self.min_runs, self.max_runs, self.target_s = warmup, min_runs, max_runs, target_s

    def as_dict(self):
        return dict(warmup=self.warmup, min_runs=self.min_runs, max_runs=self.max_runs, target_s=self.target_s)


class Timer:
    """CUDA events on a GPU; perf_counter + synchronize elsewhere."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.device = device

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def sample(self, budget, fn):
        """fn(i) runs one call (i counts warm-up too, for rotation);
        returns the per-call device times in ns."""
        i = 0
        for _ in range(budget.warmup):
            fn(i)
            i += 1
        self.sync()
        pairs, walls = [], []
        start = time.perf_counter()
        while len(pairs) < budget.max_runs and (
            len(pairs) < budget.min_runs or time.perf_counter() - start < budget.target_s
        ):
            if self.cuda:
                a = torch.cuda.Event(enable_timing=True)
                b = torch.cuda.Event(enable_timing=True)
                a.record()
                fn(i)
                b.record()
                pairs.append((a, b))
                # Keep the queue short so the wall-clock budget means something.
                if len(pairs) % 16 == 0:
                    b.synchronize()
            else:
                t0 = time.perf_counter_ns()
                fn(i)
                walls.append(time.perf_counter_ns() - t0)
                pairs.append(None)
            i += 1
        self.sync()
        if self.cuda:
            return [a.elapsed_time(b) * 1e6 for a, b in pairs]
        return walls


def wall_sample(budget, fn, sync):
    i = 0
    for _ in range(budget.warmup):
        fn(i)
        i += 1
    sync()
    out = []
    start = time.perf_counter()
    while len(out) < budget.max_runs and (
        len(out) < budget.min_runs or time.perf_counter() - start < budget.target_s
    ):
        t0 = time.perf_counter_ns()
        fn(i)
        sync()
        out.append(time.perf_counter_ns() - t0)
        i += 1
    return out


def reduce(op, x, p):
    """The op over x (1-D), whole (p None) or over rows of length p."""
    v = x if p is None else x.view(-1, p)
    kw = {} if p is None else {"dim": 1}
    if op == "sum":
        return torch.sum(v, **kw)
    if op == "mean":
        return torch.mean(v, **kw)
    if op == "max":
        return torch.amax(v, **kw) if p is not None else torch.amax(v)
    raise ValueError(op)


def check(op, x, p):
    """Compares the float32 op with a float64 reference on the same data:
    ||out - ref|| / ||ref|| (max must be exact)."""
    got = reduce(op, x, p).double()
    ref = reduce(op, x.double(), p)
    if op == "max":
        ok = bool(torch.equal(got, ref))
        rel = 0.0 if ok else float("inf")
    else:
        denom = torch.linalg.vector_norm(ref.reshape(-1)).item()
        diff = torch.linalg.vector_norm((got - ref).reshape(-1)).item()
        rel = diff / denom if denom > 0 else diff
        ok = rel < 1e-3 and math.isfinite(rel)
    return {"pass": ok, "rel_err": rel}


def gbps(nbytes, ns):
    return nbytes / ns if ns > 0 else 0.0


def group_by_peer(spec, device, timer, dev_budget, host_budget, random, log):
    """PyTorch's keyed reductions for one gpulanes group-by row: int64 keys
    uniform over `cardinality` values and float32 values; sum with
    index_add_ (float atomics: not deterministic), max with scatter_reduce_
    (amax), count with bincount, timed apart and as the three together
    (gpulanes computes sum, mean, max and count in one pass). Device rows
    start from tensors on the GPU; host rows include the uploads and the
    results' download, as gpulanes' rows do."""
    rows, card = spec["rows"], spec["cardinality"]
    log(f"group-by {rows} rows, {card} keys")
    keys = torch.randint(0, card, (rows,), device=device, dtype=torch.int64)
    values = random(rows)

    def sum_(k, v):
        return torch.zeros(card, device=device, dtype=torch.float32).index_add_(0, k, v)

    def max_(k, v):
        return torch.full((card,), float("-inf"), device=device, dtype=torch.float32).scatter_reduce_(
            0, k, v, reduce="amax", include_self=False)

    def count_(k, v):
        return torch.bincount(k, minlength=card)

    def all3(k, v):
        return sum_(k, v), max_(k, v), count_(k, v)

    out = {"rows": rows, "cardinality": card, "key_dtype": "int64", "dtype": "float32",
           "bytes_gpulanes": rows * 8, "bytes": rows * 12, "timer": "cuda_events" if timer.cuda else "wall"}
    # Determinism: index_add_ on float32 may differ run to run.
    a, b = sum_(keys, values), sum_(keys, values)
    out["index_add_same_bits_twice"] = bool(torch.equal(a, b))
    for name, fn in [("index_add_sum", sum_), ("scatter_reduce_amax", max_), ("bincount", count_), ("all3", all3)]:
        ns = timer.sample(dev_budget, lambda i: fn(keys, values))
        out[name] = {"time": summarize(ns)}
        out[name]["gbps"] = gbps(rows * 12, out[name]["time"]["median_ns"])
    hk, hv = keys.cpu(), values.cpu()

    def from_host(i):
        s, m, c = all3(hk.to(device), hv.to(device))
        return s.cpu(), m.cpu(), c.cpu()

    ns = wall_sample(host_budget, from_host, lambda: None)
    out["all3_host"] = {"time": summarize(ns), "gbps": gbps(rows * 12, summarize(ns)["median_ns"])}
    return out


def inputs_for(nbytes, rotate_bytes, max_inputs):
    return max(2, min(max_inputs, -(-rotate_bytes // max(1, nbytes))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", help="bytes, e.g. 4K,64K,1M,16M,256M,1G")
    ap.add_argument("--partitions", default="64,4K,1M", help="partition sizes in elements ('none' for whole only)")
    ap.add_argument("--ops", default="sum,mean,max")
    ap.add_argument("--from-gpulanes", metavar="JSON", help="take sizes, partitions, ops, rotation, copy size from a gpulanes bench report")
    ap.add_argument("--json", metavar="FILE", help="write the report here (default: stdout)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-host", action="store_true", help="skip the from-host rows")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (only to test this script)")
    ap.add_argument("--rotate-bytes", default=None)
    ap.add_argument("--copy-size", default=None)
    ap.add_argument("--max-partitions", type=int, default=0)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()

    sizes = parse_list(args.sizes) if args.sizes else None
    partitions = [] if args.partitions.strip() == "none" else parse_list(args.partitions)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    rotate_bytes = parse_size(args.rotate_bytes) if args.rotate_bytes else 512 << 20
    copy_bytes = parse_size(args.copy_size) if args.copy_size else None
    max_inputs = 64
    max_partitions = args.max_partitions or None
    host = not args.no_host
    seed = args.seed
    if args.from_gpulanes:
        with open(args.from_gpulanes) as f:
            cfg = json.load(f)["config"]
        sizes = cfg["sizes"]
        partitions = cfg["partition_sizes"]
        ops = [o for o in cfg["ops"] if o in TORCH_FN]
        rotate_bytes = cfg["rotate_bytes"]
        max_inputs = cfg["max_inputs"]
        max_partitions = cfg.get("max_partitions")
        copy_bytes = copy_bytes or cfg["copy_bytes"]
        host = cfg.get("host", True) and not args.no_host
        seed = seed if seed is not None else cfg.get("seed")
    group_by_specs = []
    if args.from_gpulanes:
        with open(args.from_gpulanes) as f:
            for row in json.load(f).get("group_by", []):
                if row.get("kind") == "group_by":
                    group_by_specs.append({"rows": row["rows"], "cardinality": row["cardinality"]})
    if not sizes:
        ap.error("give --sizes or --from-gpulanes")
    bad = [o for o in ops if o not in TORCH_FN]
    if bad:
        ap.error(f"unknown ops {bad}: expected sum, mean, max")
    if any(s % 4 or s < 4 for s in sizes):
        ap.error("sizes must be positive multiples of 4 bytes")
    copy_bytes = copy_bytes or max(16 << 20, min(1 << 30, max(sizes)))

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu-peers: CUDA is not available (torch %s)" % torch.__version__, file=sys.stderr)
        return 1
    timer = Timer(device)
    quick = args.quick
    dev_budget = Budget(3, 5, 50, 0.1) if quick else Budget(5, 10, 200, 0.3)
    host_budget = Budget(1, 3, 20, 0.1) if quick else Budget(2, 5, 50, 0.4)
    copy_budget = Budget(3, 5, 20, 0.15) if quick else Budget(3, 10, 100, 0.5)
    rt_runs = 100 if quick else 500
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int(time.time_ns()) & 0x7FFF_FFFF_FFFF_FFFF)

    def random(n, on=device, g=gen):
        return torch.rand(n, device=on, generator=g, dtype=torch.float32) * 2 - 1

    started = time.perf_counter()
    log = lambda msg: print(f"gpu-peers [{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    # Floors.
    log("floors")
    n_copy = copy_bytes // 4
    src = random(n_copy)
    dst = torch.empty_like(src)
    copy_ns = timer.sample(copy_budget, lambda i: dst.copy_(src))
    copy = {"bytes": copy_bytes, "bytes_moved": 2 * copy_bytes, "timer": "cuda_events" if timer.cuda else "wall", "time": summarize(copy_ns)}
    copy["gbps"] = gbps(2 * copy_bytes, copy["time"]["median_ns"])
    floors = {"copy": copy}
    cpu_gen = torch.Generator()
    cpu_gen.manual_seed(1)
    h_page = torch.rand(n_copy, generator=cpu_gen) * 2 - 1
    up = wall_sample(copy_budget, lambda i: dst.copy_(h_page), timer.sync)
    floors["upload_pageable"] = {"bytes": copy_bytes, "bytes_moved": copy_bytes, "timer": "wall", "time": summarize(up)}
    floors["upload_pageable"]["gbps"] = gbps(copy_bytes, floors["upload_pageable"]["time"]["median_ns"])
    if timer.cuda:
        h_pin = h_page.pin_memory()
        up = wall_sample(copy_budget, lambda i: dst.copy_(h_pin, non_blocking=True), timer.sync)
        floors["upload_pinned"] = {"bytes": copy_bytes, "bytes_moved": copy_bytes, "timer": "wall", "time": summarize(up)}
        floors["upload_pinned"]["gbps"] = gbps(copy_bytes, floors["upload_pinned"]["time"]["median_ns"])
        del h_pin
    del src, dst, h_page
    rt_budget = Budget(20, rt_runs, rt_runs, 0)
    floors["round_trip"] = {
        "empty_sync": summarize(wall_sample(rt_budget, lambda i: None, timer.sync)),
    }
    one = random(1)
    floors["round_trip"]["item_4_bytes"] = summarize(wall_sample(rt_budget, lambda i: one.item(), lambda: None))

    results = []
    failures = []
    for nbytes in sizes:
        n = nbytes // 4
        r = inputs_for(nbytes, rotate_bytes, max_inputs)
        xs = [random(n) for _ in range(r)]
        hs = [x.cpu() for x in xs] if host else []
        parts = [None] + [p for p in partitions if p < n and n % p == 0 and (max_partitions is None or n // p <= max_partitions)]
        skipped = [p for p in partitions if p < n and n % p != 0]
        for p in skipped:
            failures.append(f"{label(nbytes)} p={label(p)}: skipped, {n} elements are not a multiple of {p}")
        for op in ops:
            for p in parts:
                what = f"{op} {label(nbytes)} {'whole' if p is None else 'p=' + label(p)}"
                log(what)
                checks = [check(op, x, p) for x in xs[: min(r, 4)]]
                ok = all(c["pass"] for c in checks)
                worst = max(c["rel_err"] for c in checks)
                if not ok:
                    failures.append(f"{what}: rel_err {worst:.3g}")
                ns = timer.sample(dev_budget, lambda i: reduce(op, xs[i % r], p))
                row = {
                    "op": op, "torch_fn": TORCH_FN[op] + ("" if p is None else "(dim=1)"),
                    "source": "device", "bytes": nbytes, "size": label(nbytes), "elements": n,
                    "partition_size": p, "partitions": 1 if p is None else n // p, "inputs": r,
                    "timer": "cuda_events" if timer.cuda else "wall", "time": summarize(ns),
                    "check": {"pass": ok, "max_rel_err": worst, "inputs_checked": len(checks)},
                }
                row["gbps"] = gbps(nbytes, row["time"]["median_ns"])
                row["ratio_to_copy"] = row["gbps"] / copy["gbps"] if copy["gbps"] else 0.0
                results.append(row)
                if host:
                    def from_host(i):
                        out = reduce(op, hs[i % r].to(device), p)
                        return out.item() if p is None else out.cpu()
                    ns = wall_sample(host_budget, from_host, lambda: None)
                    row = dict(row, source="host", timer="wall", time=summarize(ns))
                    row["gbps"] = gbps(nbytes, row["time"]["median_ns"])
                    row["ratio_to_copy"] = row["gbps"] / copy["gbps"] if copy["gbps"] else 0.0
                    up = floors["upload_pageable"]["gbps"]
                    row["ratio_to_upload"] = row["gbps"] / up if up else 0.0
                    results.append(row)
        del xs, hs
        if timer.cuda:
            torch.cuda.empty_cache()

    group_by = []
    for spec in group_by_specs:
        try:
            group_by.append(group_by_peer(spec, device, timer, dev_budget, host_budget, random, log))
        except Exception as e:  # one failed peer must not lose the others
            failures.append(f"group-by {spec}: {e!r}")
        if timer.cuda:
            torch.cuda.empty_cache()

    report = {
        "schema": SCHEMA,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": sys.argv,
        "torch_version": torch.__version__,
        "cuda_version": getattr(torch.version, "cuda", None),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if timer.cuda else platform.processor() or "cpu",
        "software": not timer.cuda,
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "config": {
            "sizes": sizes, "partition_sizes": partitions, "ops": ops, "rotate_bytes": rotate_bytes,
            "max_inputs": max_inputs, "max_partitions": max_partitions, "copy_bytes": copy_bytes,
            "quick": quick, "host": host, "seed": seed,
            "device_budget": dev_budget.as_dict(), "host_budget": host_budget.as_dict(),
        },
        "floors": floors,
        "results": results,
        "group_by": group_by,
        "all_checks_pass": not any("rel_err" in f for f in failures),
        "failures": failures,
        "elapsed_s": time.perf_counter() - started,
    }
    text = json.dumps(report, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    log("done")
    return 0 if report["all_checks_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
