"""Summarise Nsight Compute CSV exports of router launches: per kernel the launch shape, time,
throughputs and occupancy (``--page details --csv``), then the most sampled SASS instructions with
their stall reasons and the samples by opcode (``--page source --csv --print-source sass``).
    ncu -i R.ncu-rep --page details --csv > details.csv
    ncu -i R.ncu-rep --page source --csv --print-source sass > source.csv
    python -m perf.probes.ncu_csv_summary details.csv source.csv
"""
import collections, csv, io, sys

DETAILS = ["Duration", "Elapsed Cycles", "SM Active Cycles", "Compute (SM) Throughput", "L2 Cache Throughput",
           "DRAM Throughput", "L1/TEX Cache Throughput", "L2 Hit Rate", "Executed Instructions",
           "Registers Per Thread", "Dynamic Shared Memory Per Block", "Block Limit Shared Mem", "Cluster Size",
           "Max Active Clusters", "Waves Per SM", "Achieved Occupancy", "Issued Warp Per Scheduler",
           "No Eligible", "Warp Cycles Per Issued Instruction"]
SAMPLES = "Warp Stall Sampling (All Samples)"


def details(path):
    by = collections.defaultdict(dict)
    for r in csv.DictReader(open(path)):
        by[r["ID"]]["kernel"] = f"{r['Kernel Name']} grid {r['Grid Size']}"
        by[r["ID"]][r["Metric Name"]] = f"{r['Metric Value']} {r['Metric Unit']}".strip()
    for d in by.values():
        print(f"== {d['kernel']}")
        for name in DETAILS:
            if name in d:
                print(f"   {name:36s} {d[name]}")


def source(path):
    for block in open(path).read().split('"Kernel Name",')[1:]:
        name, rest = block.split("\n", 1)
        rows = list(csv.DictReader(io.StringIO(rest)))
        stalls = [c for c in rows[0] if c.startswith("stall_") and "Not Issued" not in c]
        count = lambda r, c: int(r[c] or 0)  # noqa: E731
        print(f"== {name.strip(',').strip(chr(34))}: {sum(count(r, SAMPLES) for r in rows)} samples")
        for r in sorted(rows, key=lambda r: -count(r, SAMPLES))[:10]:
            top = sorted(((count(r, c), c) for c in stalls if count(r, c)), reverse=True)[:3]
            print(f"   {count(r, SAMPLES):5d}  {r['Source'][:56]:56s} " + ", ".join(f"{c} {n}" for n, c in top))
        by_op = collections.Counter()
        for r in rows:
            words = r["Source"].split()
            by_op[(words[1] if words[0].startswith("@") else words[0]).split(".")[0]] += count(r, SAMPLES)
        print("   by opcode: " + ", ".join(f"{op} {n}" for op, n in by_op.most_common(10)))


if __name__ == "__main__":
    details(sys.argv[1])
    source(sys.argv[2])
