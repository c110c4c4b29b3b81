"""The one way this project times a GPU op: cold L2, per call inside a CUDA graph, median.

Per-call time inside a captured CUDA graph, median over replays, in microseconds:
- cold: R calls per graph, each on its own input set, R sets together >= 3x L2;
- hot: R calls per graph, all on the same input set (L2-resident);
- in a chain (``time_per_call(producer=...)``): each call after a one-kernel producer writing its
  main input, less the graph of the producers alone.

Nothing here touches CUDA at import time, so the module imports on CPU-only machines.
"""

import csv
import datetime
import functools
import importlib.metadata
import json
import math
import pathlib
import statistics
import subprocess
import time

import torch


def _device(device=None) -> torch.device:
    if device is None:
        return torch.device("cuda", torch.cuda.current_device())
    device = torch.device(device)
    return torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)


def _replay_ms(graph, replays: int) -> list:
    """Time each replay on its own with CUDA events; one untimed replay first (graph upload)."""
    graph.replay()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(replays)]
    for start, end in events:
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def measure_floors(device=None, copy_bytes: int = 1 << 30, launches: int = 200, replays: int = 30) -> dict:
    """Measured device-to-device copy bandwidth (GB/s, bytes read + written) and the graph
    launch floor (us per trivial kernel inside a CUDA graph)."""
    dev = _device(device)
    with torch.cuda.device(dev):
        # Shrink the copy if memory is short; 1 GiB keeps it far out of L2.
        copy_bytes = min(copy_bytes, torch.cuda.mem_get_info(dev)[0] // 4)
        src = torch.empty(copy_bytes, dtype=torch.uint8, device=dev).random_(0, 256)
        dst = torch.empty_like(src)
        for _ in range(2):
            dst.copy_(src)
        times = []
        for _ in range(10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        copy_gbps = 2 * copy_bytes / (statistics.median(times) * 1e-3) / 1e9
        del src, dst

        x = torch.zeros(1, device=dev)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            x.add_(1)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(launches):
                x.add_(1)
        launch_us = statistics.median(_replay_ms(graph, replays)) / launches * 1e3
        del graph
        torch.cuda.empty_cache()
    return {"copy_gbps": round(copy_gbps, 1), "graph_launch_floor_us": round(launch_us, 3)}


def _nvidia_smi(index: int) -> dict:
    fields = ["driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem"]
    try:
        out = subprocess.run(
            ["nvidia-smi", "-i", str(index), f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip().splitlines()[0]
        driver, sm, sm_max, mem, mem_max = (v.strip() for v in out.split(","))
        return {"driver": driver, "sm_clock_mhz": sm, "sm_clock_max_mhz": sm_max, "mem_clock_mhz": mem,
                "mem_clock_max_mhz": mem_max}
    except Exception:  # no nvidia-smi, or it answered something unexpected: leave the fields out
        return {}


def _dsl_version():
    try:
        return importlib.metadata.version("nvidia-cutlass-dsl")
    except Exception:
        try:
            import cutlass
            return getattr(cutlass, "__version__", None)
        except Exception:
            return None


def device_meta(device=None) -> dict:
    """What a result file records about where it was taken, floors included."""
    dev = _device(device)
    props = torch.cuda.get_device_properties(dev)
    meta = {
        "device": props.name,
        "cuda_runtime": torch.version.cuda,
        "torch": torch.__version__,
        "cutlass_dsl": _dsl_version(),
        "sm_count": props.multi_processor_count,
        "l2_bytes": props.L2_cache_size,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(_nvidia_smi(dev.index))
    meta.update(measure_floors(dev))
    return meta


def floor_us(bytes_moved: int, meta: dict) -> float:
    """Graph launch floor + moving the op's bytes once at the measured copy bandwidth."""
    return meta["graph_launch_floor_us"] + bytes_moved / (meta["copy_gbps"] * 1e3)


def _capture(launches):
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for launch in launches:
            launch()
    return graph


def per_call_us(replay_ms, calls: int, base_ms=None) -> float:
    """us per call of a graph of ``calls`` calls from its replay times (ms, median), less the
    median of ``base_ms``, the same graph without the op (a chain's producers)."""
    us = statistics.median(replay_ms) / calls * 1e3
    return us if base_ms is None else us - statistics.median(base_ms) / calls * 1e3


def mul_producer(index: int):
    """The chain's producer (docs/benchmarking.md) for the op's main input ``inputs[index]``:
    per input set, one torch kernel ``torch.mul(h, one, out=x)`` with ``h`` a copy of x, an
    ordinary elementwise kernel (it never releases its dependents early) that leaves x's values
    as they were, so the op's check still holds."""
    def producer(inputs):
        x = inputs[index]
        h, one = x.clone(), torch.ones(1, dtype=x.dtype, device=x.device)
        return lambda: torch.mul(h, one, out=x)
    return producer


def time_per_call(make_inputs, call, *, bytes_per_call: int, l2_bytes: int = None, min_calls: int = 64,
                  max_calls: int = 2048, mem_fraction: float = 0.5, replays: int = 20, check=None,
                  poison=None, warmup: int = 3, producer=None) -> dict:
    """Cold and hot per-call time (us) of ``call(*make_inputs())`` inside CUDA graphs.

    ``make_inputs()`` returns a fresh tuple of GPU tensors (inputs and outputs) filled with
    random data: never zeros, which flatter some kernels. ``call`` launches on the current
    stream. ``poison(inputs)`` overwrites the outputs (NaN, or a sentinel the op cannot
    produce) before the timed replays; ``check(inputs)`` raises if the outputs are wrong and
    runs on every input set afterwards, so a kernel that did not run cannot look fast.

    R = ceil(3 * L2 / bytes_per_call) clamped to [min_calls, max_calls] and to memory. At
    least ``min_calls`` so the graph's own launch is amortised; for tiny ops the cap makes the
    rotation smaller than 3x L2, which the returned ``l2_multiple`` shows.

    ``producer`` times the op in a chain: ``producer(inputs)`` returns a launch of one kernel
    that writes the op's main input in that input set (``mul_producer``); every call then runs
    right after its set's producer, and the per-call time is that graph's less the graph of the
    producers alone (returned as ``producer_us``, cold).
    """
    dev = _device()
    if l2_bytes is None:
        l2_bytes = torch.cuda.get_device_properties(dev).L2_cache_size
    mem_cap = int(mem_fraction * torch.cuda.mem_get_info(dev)[0] // max(bytes_per_call, 1))
    rotations = max(min_calls, math.ceil(3 * l2_bytes / max(bytes_per_call, 1)))
    rotations = max(1, min(rotations, max_calls, mem_cap))
    input_sets = [make_inputs() for _ in range(rotations)]
    calls = [functools.partial(call, *inputs) for inputs in input_sets]
    writes = None if producer is None else [producer(inputs) for inputs in input_sets]
    # the launches of one call: in a chain, its set's producer first
    steps = [[c] for c in calls] if writes is None else [[w, c] for w, c in zip(writes, calls)]

    # Compile, load and first-launch before capture, on a side stream as torch advises.
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            for launch in steps[0]:
                launch()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()

    cold_graph = _capture([f for step in steps for f in step])
    hot_graph = _capture(steps[0] * rotations)
    base = None if writes is None else (_capture(writes), _capture([writes[0]] * rotations))

    if poison is not None:
        for inputs in input_sets:
            poison(inputs)
    cold_ms = _replay_ms(cold_graph, replays)
    if check is not None:
        for inputs in input_sets:
            check(inputs)

    if poison is not None:
        poison(input_sets[0])
    hot_ms = _replay_ms(hot_graph, replays)
    if check is not None:
        check(input_sets[0])
    cold_base_ms, hot_base_ms = (None, None) if base is None else (_replay_ms(g, replays) for g in base)

    del cold_graph, hot_graph, base, input_sets, calls, writes, steps
    torch.cuda.empty_cache()
    result = {
        "cold_us": per_call_us(cold_ms, rotations, cold_base_ms),
        "hot_us": per_call_us(hot_ms, rotations, hot_base_ms),
        "rotations": rotations,
        "l2_multiple": rotations * bytes_per_call / l2_bytes,
    }
    if cold_base_ms is not None:
        result["producer_us"] = per_call_us(cold_base_ms, rotations)
    return result


def eager_overhead_us(call, inputs, n: int = 2000) -> float:
    """Host cost per call: n back-to-back eager calls, one synchronize at the end."""
    for _ in range(10):
        call(*inputs)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        call(*inputs)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def write_results(path, meta: dict, rows: list) -> None:
    """``{"meta": meta, "rows": rows}`` as JSON at ``path`` and the rows as CSV beside it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    keys = list(dict.fromkeys(key for row in rows for key in row))
    with path.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def save_figure(fig, png_path, title: str, metadata: dict | None = None) -> None:
    """Title, lay out (unless the figure has a layout engine of its own), write (creating the
    directory) and close a results plot. ``metadata``: the PNG's text fields (a None value
    leaves one out, e.g. ``{"Software": None}`` for bytes that do not depend on the version)."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    png_path = pathlib.Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120, metadata=metadata)
    plt.close(fig)
