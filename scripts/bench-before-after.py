#!/usr/bin/env python3
"""Summarises a scripts/bench-before-after.sh run: the `gpulanes bench --json`
reports old-N.json and new-N.json of each round N in one directory.

Per (op, size, partitioning), device-resident rows, input bytes/s (GB/s,
10^9 bytes/s; each run's figure is already the median of its timed runs):

  old f32, new f32, new f64 = median over the rounds
  new/old  = median over the rounds of (new f32 / old f32 in the same round)
  f64/f32  = median over the rounds of (new f64 / new f32 in the same run)

with the range over the rounds in brackets, then the verdicts on the bars
at --bar-size (whole inputs, sum): float32 new/old >= 0.90 and float64/float32
>= 0.80 (in bytes/s); on a hardware adapter also new GB/s over the same run's
shader-copy floor (floors.shader_copy, read + write counted) at the largest
size, >= 0.90 for both dtypes (e.g. SIZES=64M,256M,1G on a GPU).
Writes summary.json next to the reports.

Usage: bench-before-after.py DIR [--bar-size 64M]
"""

import glob
import json
import os
import re
import statistics
import sys


def label(n):
    for shift, suffix in ((30, "G"), (20, "M"), (10, "K")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


def parse_size(text):
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not m:
        sys.exit(f"bad size {text!r}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def load(path):
    with open(path) as f:
        r = json.load(f)
    rows = {}
    for row in r["results"]:
        if row["source"] != "device" or row.get("error"):
            continue
        key = (row.get("dtype", "float32"), row["op"], row["bytes"], row["partition_size"])
        rows[key] = row
    return r, rows


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def rng(xs):
    return "" if not xs else f" [{min(xs):.2f}-{max(xs):.2f}]"


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if args else 2)
    d = args[0]
    bar_size = 64 << 20
    if "--bar-size" in args:
        bar_size = parse_size(args[args.index("--bar-size") + 1])

    def rounds_of(which):
        out = {}
        for p in glob.glob(os.path.join(d, f"{which}-*.json")):
            m = re.search(rf"{which}-(\d+)\.json$", p)
            if m:
                out[int(m.group(1))] = load(p)
        return out

    old, new = rounds_of("old"), rounds_of("new")
    rounds = sorted(set(old) & set(new))
    if not rounds:
        sys.exit(f"no paired old-N.json / new-N.json in {d}")
    problems = []
    for which, runs in (("old", old), ("new", new)):
        for n in rounds:
            r = runs[n][0]
            if not r.get("all_checks_pass", False):
                problems.append(f"{which}-{n}: checks failed: {r.get('failures')}")
    first = new[rounds[0]][0]
    software = first.get("software", False)
    adapter = first.get("adapter", {})

    keys = sorted(
        {(op, b, p) for n in rounds for (_, op, b, p) in new[n][1]},
        key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2]),
    )
    table = []
    summary = {"dir": d, "rounds": rounds, "software": software,
               "adapter": adapter.get("name"), "rows": []}
    for op, b, p in keys:
        def series(runs, dtype):
            return [runs[n][1][(dtype, op, b, p)]["gbps"] for n in rounds
                    if (dtype, op, b, p) in runs[n][1]]

        def parts(runs, dtype):
            row = next((runs[n][1][(dtype, op, b, p)] for n in rounds
                        if (dtype, op, b, p) in runs[n][1]), None)
            return None if row is None else row["partitions"]

        o32, n32, n64 = series(old, "float32"), series(new, "float32"), series(new, "float64")
        paired_new_old = [new[n][1][("float32", op, b, p)]["gbps"] / old[n][1][("float32", op, b, p)]["gbps"]
                          for n in rounds
                          if ("float32", op, b, p) in new[n][1] and ("float32", op, b, p) in old[n][1]]
        paired_64_32 = [new[n][1][("float64", op, b, p)]["gbps"] / new[n][1][("float32", op, b, p)]["gbps"]
                        for n in rounds
                        if ("float64", op, b, p) in new[n][1] and ("float32", op, b, p) in new[n][1]]
        def of_shader_copy(n, dt):
            sc = (new[n][0]["floors"].get("shader_copy") or {}).get("gbps")
            return new[n][1][(dt, op, b, p)]["gbps"] / sc if sc else None

        ratio_copy = {dt: med([x for x in (of_shader_copy(n, dt) for n in rounds
                                           if (dt, op, b, p) in new[n][1]) if x is not None])
                      for dt in ("float32", "float64")}
        entry = {
            "op": op, "bytes": b, "size": label(b), "partition_size": p,
            "partitions_f32": parts(new, "float32"), "partitions_f64": parts(new, "float64"),
            "old_f32_gbps": med(o32), "new_f32_gbps": med(n32), "new_f64_gbps": med(n64),
            "new_over_old_f32": med(paired_new_old), "new_over_old_f32_all": paired_new_old,
            "f64_over_f32": med(paired_64_32), "f64_over_f32_all": paired_64_32,
            "of_shader_copy_f32": ratio_copy["float32"], "of_shader_copy_f64": ratio_copy["float64"],
        }
        summary["rows"].append(entry)
        whole = "whole" if p is None else f"p={label(p)}"
        table.append([op, label(b), whole, fmt(entry["old_f32_gbps"]), fmt(entry["new_f32_gbps"]),
                      fmt(entry["new_over_old_f32"], 2) + rng(paired_new_old),
                      fmt(entry["new_f64_gbps"]),
                      fmt(entry["f64_over_f32"], 2) + rng(paired_64_32)])

    print(f"adapter: {adapter.get('name')} ({'SOFTWARE: CPU speed, ratios only' if software else 'hardware'})")
    print(f"rounds: {len(rounds)} (old and new alternating); device-resident rows; GB/s = input bytes / median time")
    head = ["op", "size", "parts", "old f32 GB/s", "new f32 GB/s", "new/old f32",
            "new f64 GB/s", "f64/f32"]
    widths = [max(len(str(r[i])) for r in [head] + table) for i in range(len(head))]
    for r in [head] + table:
        print("  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    print("(medians over the rounds; ratios are medians of per-round ratios, range in brackets;"
          " partitions are in elements: 4 bytes each for float32, 8 for float64)")

    verdicts = []
    bar = next((e for e in summary["rows"]
                if e["op"] == "sum" and e["bytes"] == bar_size and e["partition_size"] is None), None)
    if bar is None:
        verdicts.append({"bar": f"sum {label(bar_size)} whole", "met": None,
                         "detail": "not measured"})
    else:
        r1, r2 = bar["new_over_old_f32"], bar["f64_over_f32"]
        verdicts.append({"bar": f"float32 sum {label(bar_size)} whole: new >= 90% of old (bytes/s)",
                         "value": r1, "met": r1 is not None and r1 >= 0.90})
        verdicts.append({"bar": f"float64 sum {label(bar_size)} whole: >= 80% of float32 (bytes/s)",
                         "value": r2, "met": r2 is not None and r2 >= 0.80})
    if not software:
        largest = max(b for (_, b, _) in keys)
        big = next((e for e in summary["rows"]
                    if e["op"] == "sum" and e["bytes"] == largest and e["partition_size"] is None), None)
        for dt in ("f32", "f64"):
            v = None if big is None else big[f"of_shader_copy_{dt}"]
            verdicts.append({"bar": f"{dt} sum {label(largest)} whole: >= 90% of the shader-copy floor's GB/s",
                             "value": v, "met": v is not None and v >= 0.90})
    summary["verdicts"] = verdicts
    summary["problems"] = problems
    for v in verdicts:
        state = "not measured" if v["met"] is None else ("MET" if v["met"] else "NOT MET")
        print(f"bar: {v['bar']}: {fmt(v.get('value'), 3)} -> {state}")
    for p in problems:
        print(f"PROBLEM: {p}")
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
