#!/usr/bin/env python3
"""Joins a `gpulanes bench --json` report with a `gpu-peers.py` report taken
in the same run and prints the ratio table:

  speed gl/torch = torch median time / gpulanes median time (>1: gpulanes faster)
  gl of copy     = gpulanes GB/s / gpulanes' bandwidth floor (the faster of its
                   buffer-to-buffer copy and its WGSL shader copy)
  torch of copy  = PyTorch GB/s / device copy GB/s measured by PyTorch

and the verdict on the DESIGN.md targets for large device-resident inputs
(>= 256 MiB, whole): at least 90% of the measured copy bandwidth, and at
least PyTorch's speed. Only the float32 rows of the gpulanes report are
joined (the peers are float32). Usage: bench-compare.py gpulanes.json
peers.json [--json OUT]
"""

import json
import sys

LARGE = 256 << 20


def label(n):
    for shift, suffix in ((30, "G"), (20, "M"), (10, "K")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


def fmt_ns(ns):
    if not ns or ns <= 0:
        return "-"
    if ns < 1e3:
        return f"{ns:.0f}ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f}us"
    if ns < 1e9:
        return f"{ns / 1e6:.2f}ms"
    return f"{ns / 1e9:.2f}s"


def fmt_gbps(g):
    if g is None:
        return "-"
    return f"{g:.3g}" if g < 100 else f"{g:.0f}"


def pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [str(c).ljust(w) if i < 4 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--json")]
    out_json = None
    if "--json" in sys.argv:
        out_json = sys.argv[sys.argv.index("--json") + 1]
        args = [a for a in args if a != out_json]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    gl = json.load(open(args[0]))
    pt = json.load(open(args[1]))
    a = gl["adapter"]
    print(f"gpulanes {gl['gpulanes_version']} on {a['name']} ({a['backend']}, {a['device_type']}, driver {a['driver']} {a['driver_info']}); "
          f"timer {gl['timer']}; {gl['date_utc']}")
    print(f"PyTorch {pt['torch_version']} (CUDA {pt['cuda_version']}) on {pt['device_name']}; CUDA events; {pt['date_utc']}")
    if gl["software"] or pt.get("software"):
        print("*** a SOFTWARE adapter or a CPU device took part: these ratios say nothing about GPU speed ***")
    gf, pf = gl["floors"], pt["floors"]
    sc = gf.get("shader_copy")
    gl_floor = gf["bandwidth"]["gbps"] if "bandwidth" in gf else gf["copy"]["gbps"]
    print(f"copy floor:   wgpu buffer copy {gf['copy']['gbps']:.1f} GB/s, wgpu shader copy {sc['gbps'] if sc else float('nan'):.1f} GB/s "
          f"({label(gf['copy']['bytes'])}, read+write) | torch {pf['copy']['gbps']:.1f} GB/s ({label(pf['copy']['bytes'])})")
    up = f"upload:       wgpu write_buffer {gf['upload']['gbps']:.2f} GB/s | torch pageable {pf['upload_pageable']['gbps']:.2f} GB/s"
    if "upload_pinned" in pf:
        up += f" | torch pinned {pf['upload_pinned']['gbps']:.2f} GB/s"
    print(up)
    rt = gf["round_trip"]
    print(f"round trip:   wgpu empty submit {fmt_ns(rt['empty_submit']['median_ns'])}, 4-byte readback {fmt_ns(rt['readback_4_bytes']['median_ns'])} | "
          f"torch empty sync {fmt_ns(pf['round_trip']['empty_sync']['median_ns'])}, .item() {fmt_ns(pf['round_trip']['item_4_bytes']['median_ns'])}")
    print()

    peers = {(r["op"], r["bytes"], r["partition_size"], r["source"]): r for r in pt["results"]}
    head = ["op", "size", "parts", "src", "gpulanes", "torch", "gl/torch", "gl GB/s", "torch GB/s", "gl of copy", "torch of copy", "check"]
    rows = [head]
    joined = []
    for r in gl["results"]:
        # The PyTorch peers are float32 (gpu-peers.py); reports from before
        # `--dtype` have float32 rows only and no dtype field.
        if r.get("dtype", "float32") != "float32":
            continue
        key = (r["op"], r["bytes"], r["partition_size"], r["source"])
        p = peers.get(key)
        t_gl = r["time"]["median_ns"]
        t_pt = p["time"]["median_ns"] if p else None
        speed = t_pt / t_gl if (p and t_gl > 0) else None
        gl_copy = r["gbps"] / gl_floor if gl_floor else None
        pt_copy = p["gbps"] / pf["copy"]["gbps"] if p and pf["copy"]["gbps"] else None
        ok = r["check"]["pass"] and (p is None or p["check"]["pass"])
        parts = "whole" if r["partition_size"] is None else f"{r['partitions']}x{label(r['partition_size'])}"
        rows.append([r["op"], r["size"], parts, r["source"], fmt_ns(t_gl), fmt_ns(t_pt),
                     "-" if speed is None else f"{speed:.2f}x", fmt_gbps(r["gbps"]),
                     fmt_gbps(p["gbps"]) if p else "-", pct(gl_copy), pct(pt_copy),
                     "ok" if ok else "FAIL"])
        joined.append({"op": r["op"], "bytes": r["bytes"], "partition_size": r["partition_size"], "source": r["source"],
                       "gpulanes_ns": t_gl, "torch_ns": t_pt, "speed_gl_over_torch": speed,
                       "gpulanes_of_copy": gl_copy, "torch_of_copy": pt_copy, "checks_pass": ok})
    print(table(rows))
    print()

    verdicts = []
    for j in joined:
        if j["source"] == "device" and j["partition_size"] is None and j["bytes"] >= LARGE:
            bw = j["gpulanes_of_copy"] is not None and j["gpulanes_of_copy"] >= 0.9
            vs = j["speed_gl_over_torch"] is not None and j["speed_gl_over_torch"] >= 1.0
            verdicts.append((j, bw, vs))
            print(f"target {j['op']} {label(j['bytes'])} device: {pct(j['gpulanes_of_copy'])} of copy "
                  f"({'MEETS' if bw else 'MISSES'} >= 90%), {j['speed_gl_over_torch'] or 0:.2f}x PyTorch "
                  f"({'MEETS' if vs else 'MISSES'} >= 1.0x)")
    if not verdicts:
        print("no device-resident whole-buffer size >= 256M measured: the DESIGN.md targets were not evaluated")
    checks = gl["all_checks_pass"] and pt["all_checks_pass"]
    print(f"checks: gpulanes {'all pass' if gl['all_checks_pass'] else 'FAILED: ' + '; '.join(gl['failures'][:3])}; "
          f"torch {'all pass' if pt['all_checks_pass'] else 'FAILED: ' + '; '.join(pt['failures'][:3])}")
    if out_json:
        with open(out_json, "w") as f:
            json.dump({"gpulanes_adapter": a, "torch_device": pt["device_name"], "rows": joined,
                       "targets": [{"op": j["op"], "bytes": j["bytes"], "of_copy_ok": bw, "vs_torch_ok": vs} for j, bw, vs in verdicts],
                       "checks_pass": checks}, f, indent=1)
    return 0 if checks else 1


if __name__ == "__main__":
    sys.exit(main())
