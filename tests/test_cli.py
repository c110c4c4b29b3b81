"""The cute-kernels command line, on the CPU: help texts, one-line errors for bad arguments, a
closed stdout, the JSON outputs, aot's arguments and build failures, and the demo (its GPU path
with the timing faked, on CPU tensors)."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import cute_kernels
from cute_kernels import aot, catalog, cli, presets, timing, tolerance
from cute_kernels import reference as spec

ROOT = Path(__file__).resolve().parents[1]
PRESET, OP = "gpt-oss-20b", "PackTopk"  # 4 of its kernels are top-k packing, per arch
N_KERNELS = len(catalog.preset_kernels(presets.get(PRESET)))  # every kernel of the preset
COMMANDS = ("demo", "presets", "cache", "aot")


def environment(cache):
    # A private kernel cache, and no GPU: the demo takes its compile-only path on any machine.
    return dict(os.environ, PYTHONPATH=str(ROOT), CUTE_KERNELS_CACHE_DIR=str(cache), CUDA_VISIBLE_DEVICES="")


def run(args, cache, script=None, stdin=None):
    command = [sys.executable, *([str(script)] if script else ["-m", "cute_kernels.cli"]), *args]
    return subprocess.run(command, cwd=ROOT, env=environment(cache), capture_output=True, text=True, timeout=600,
                          input=stdin)


# Runs each command line of a JSON list in its own process, forked from one that imported the
# package once (an interpreter per command would import torch each time): its exit status, stdout
# and stderr, a traceback included if one escaped.
RUN_EACH = textwrap.dedent("""
    import json, os, sys, tempfile, traceback
    from cute_kernels import cli
    results = []
    for argv in json.load(sys.stdin):
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                code = cli.main(argv)
            except SystemExit as e:
                code = e.code
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code or 0)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        results.append([os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode()])
    json.dump(results, sys.__stdout__)
""")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


# -- help, version and bad arguments: every quick invocation at once ----------------------------
HELP = [("--help",), *((name, "--help") for name in COMMANDS), ("--version",), ("presets", "--json")]
BAD = {  # arguments ("{tmp}": a scratch directory) -> what the one error line says
    (): "the following arguments are required: COMMAND",
    ("bogus",): "invalid choice: 'bogus'",
    ("presets", "--bogus"): "unrecognized arguments: --bogus",
    ("demo", "--preset", "qwen3-235b"): "unknown preset 'qwen3-235b'; valid: deepseek-v3, kimi-k2",
    ("demo", "--arch", "sm_90"): "the arch-specific target is sm_90a",
    ("cache", "--keys", "--json"): "give one of them",
    ("aot", "--keys", "missing.txt", "--out", "{tmp}/out"): "argument --keys: cannot read missing.txt: No such file",
    ("aot", "--keys", "{tmp}/bad.keys", "--out", "{tmp}/out"): "bad.keys line 2: not a compile key: 'not-a-key'",
    ("aot", "--keys", "{tmp}/binary.keys", "--out", "{tmp}/out"): "argument --keys: cannot read",
    ("aot", "--arch", "sm_90a", "--preset", PRESET, "--jobs", "0", "--out", "{tmp}/out"):
        "argument --jobs: expected a positive integer, got '0'",
    ("aot", "--arch", "sm_90a", "--preset", PRESET, "--sm-count", "0", "--out", "{tmp}/out"):
        "argument --sm-count: expected a positive SM count or one of h100-sxm, h100-pcie",
    ("aot", "--arch", "sm_90a", "--preset", PRESET, "--sm-count", "h900", "--out", "{tmp}/out"): "got 'h900'",
    ("aot", "--arch", "sm_80", "--preset", PRESET, "--out", "{tmp}/out"):
        "unsupported arch 'sm_80'; this suite compiles for sm_90a, sm_100a",
    ("aot", "--arch", "sm_90", "--preset", PRESET, "--out", "{tmp}/out"): "the arch-specific target is sm_90a",
    ("aot", "--preset", PRESET, "--out", "{tmp}/out"): "--preset needs --arch",
    ("aot", "--arch", "sm_90a", "--preset", PRESET): "one of the arguments --out --verify is required",
    ("aot", "--out", "{tmp}/out"): "nothing to build",
    ("aot", "--verify", "{tmp}", "--preset", PRESET): "drop the build options",
    ("aot", "--arch", "sm_90a", "--preset", PRESET, "--out", "{tmp}/bad.keys"): "is not a directory",
}


@pytest.fixture(scope="module")
def quick(tmp):
    (tmp / "bad.keys").write_text("# what a GPU run used\nnot-a-key\n")
    (tmp / "binary.keys").write_bytes(b"\xff\xfe\x00")
    argvs = HELP + list(BAD)
    script = tmp / "run_each.py"
    script.write_text(RUN_EACH)
    batch = run([], tmp / "cache", script, json.dumps([[a.format(tmp=tmp) for a in argv] for argv in argvs]))
    assert batch.returncode == 0, batch.stderr
    return {argv: SimpleNamespace(returncode=rc, stdout=out, stderr=err)
            for argv, (rc, out, err) in zip(argvs, json.loads(batch.stdout))}


def test_top_level_help(quick):
    result = quick[("--help",)]
    assert result.returncode == 0 and "``" not in result.stdout
    assert "commands:" in result.stdout and "examples:" in result.stdout
    assert all(re.search(rf"^\s+{name}\s+\w", result.stdout, re.M) for name in COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help(quick, name):
    result = quick[(name, "--help")]
    assert result.returncode == 0 and result.stdout.startswith(f"usage: cute-kernels {name} ")
    description = result.stdout.split("\n\n")[1]
    assert len(description.split()) > 10, description
    assert f"examples:\n  cute-kernels {name}" in result.stdout and "--json" in result.stdout


def test_help_shows_defaults(quick):
    assert "(default: deepseek-v3)" in " ".join(quick[("demo", "--help")].stdout.split())
    text = " ".join(quick[("aot", "--help")].stdout.split())
    assert "(default: 132)" in text and "(default: one per CPU)" in text
    assert "h100-sxm=132, h100-pcie=114, h100-nvl=132, h200=132, b200=148" in text


def test_version(quick):
    result = quick[("--version",)]
    assert result.returncode == 0 and result.stdout == f"cute-kernels {cute_kernels.__version__}\n"


@pytest.mark.parametrize("argv", list(BAD), ids=lambda argv: " ".join(argv) or "(none)")
def test_bad_arguments_are_one_line_and_status_2(quick, argv):
    result = quick[argv]
    prog = f"cute-kernels {argv[0]}" if argv and argv[0] in COMMANDS else "cute-kernels"
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"{prog}: error: ") and BAD[argv] in result.stderr, result.stderr


def test_presets_json(quick):
    result = quick[("presets", "--json")]
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)["presets"]
    assert found == [json.loads(json.dumps(dataclasses.asdict(p))) for p in presets.PRESETS.values()]
    assert found[0]["name"] == "deepseek-v3" and found[0]["routing"]["n_group"] == 8


def test_closed_stdout_ends_quietly(tmp):
    """`cute-kernels presets | head`: the reader is gone before the command writes."""
    child = subprocess.Popen([sys.executable, "-m", "cute_kernels.cli", "presets"], cwd=ROOT,
                             env=environment(tmp / "cache"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141 and stderr == "", stderr  # 128 + SIGPIPE, as a shell reports it


def test_sm_count_takes_numbers_and_gpu_names():
    assert [cli._sm_count(t) for t in ("132", "h100-pcie", "B200", "H200")] == [132, 114, 148, 132]


# -- aot ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp):
    out = tmp / "aot"
    result = run(["aot", "--arch", "sm_90a", "--preset", PRESET, "--op", OP, "--sm-count", "h100-pcie", "--jobs", "2",
                  "--out", str(out), "--json"], tmp / "cache")
    assert result.returncode == 0, result.stderr
    return out, result


def test_aot_json_summary_and_sm_count(built):
    out, result = built
    summary = json.loads(result.stdout)
    assert summary["out"] == str(out) and summary["archs"] == ["sm_90a"] and summary["sm_count"] == 114
    assert (summary["built"], summary["up_to_date"], summary["failed"], summary["error_log"]) == (4, 0, [], None)
    assert summary["bytes"] > 0 and summary["seconds"] > 0
    assert json.loads((out / aot.MANIFEST).read_text())["sm_count"] == 114
    assert "4/4" in result.stderr  # progress stays on stderr


def test_aot_verify_json(built, tmp):
    result = run(["aot", "--verify", str(built[0]), "--json"], tmp / "cache")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["problems"] == [] and "4 kernels for GPUs of 114 SMs" in report["summary"]


# Lets sm_80 through the argument check, so the compiler itself rejects the arch: ptxas refuses
# the kernels' griddepcontrol (sm_90+). At top level: the spawned build workers run it too.
LET_SM_80_THROUGH = textwrap.dedent("""
    import sys
    from cute_kernels import cli, keys
    keys.SUPPORTED_ARCHS += ("sm_80",)
    if __name__ == "__main__":
        sys.exit(cli.main(sys.argv[1:]))
""")


def test_build_failures_are_one_line_each_with_a_log(tmp):
    script, out = tmp / "let_sm_80_through.py", tmp / "failing"
    script.write_text(LET_SM_80_THROUGH)
    args = ["aot", "--preset", PRESET, "--op", OP, "--jobs", "2", "--out", str(out)]
    result = run([*args, "--arch", "sm_80", "--json"], tmp / "cache", script)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "\x1b" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if re.match(r"FAILED \S+@sm_80: ", line)]
    assert len(failed) == 4 and all("error" in line and "ptxas" in line for line in failed), result.stderr
    log = out / aot.ERROR_LOG
    assert f"the full compiler output is in {log}" in result.stderr
    text = log.read_text()
    assert text.count("=== pack_topk.PackTopk[") == 4 and "ptxas" in text and "\x1b" not in text
    summary = json.loads(result.stdout)
    assert summary["built"] == 0 and summary["error_log"] == str(log)
    assert [f["reason"] for f in summary["failed"]] == [line.split(": ", 1)[1] for line in failed]
    result = run([*args, "--arch", "sm_90a"], tmp / "cache")  # a build without failures removes the log
    assert result.returncode == 0 and not log.exists(), result.stderr


def test_failure_reason_is_the_headline_without_escape_codes():
    coloured = RuntimeError("\x1b[91merror:\x1b[0m PTX assembly failed\n\n  --> kernel.py:36:0\n"
                            "  \x1b[94mnote:\x1b[0m ptxas log:\n        ptxas application ptx input, line 34; "
                            "error   : Instruction 'griddepcontrol' requires\n        .target sm_90 or higher\n")
    failure = aot.Failure.of("k", coloured)
    assert failure.reason == "error: PTX assembly failed (ptxas: Instruction 'griddepcontrol' requires)"
    assert "\x1b" not in failure.text and "note: ptxas log" in failure.text
    assert aot.Failure.of("k", KeyError("sm_75")).reason == "KeyError: 'sm_75'"


# -- demo and cache -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled(tmp):
    cache = tmp / "demo-cache"
    first = run(["demo", "--preset", PRESET], cache)
    assert first.returncode == 0, first.stderr
    again = run(["demo", "--preset", PRESET, "--json"], cache)
    assert again.returncode == 0, again.stderr
    return cache, first, again


def test_demo_without_gpu_compiles_only(compiled):
    cache, first, _ = compiled
    assert first.stderr.startswith("no GPU: compiling only (for sm_90a)\n")
    steps = [line for line in first.stderr.splitlines() if line.startswith("[")]
    n = N_KERNELS
    assert len(steps) == n and steps[-1].startswith(f"[########################] {n}/{n} ") and "compiled in" in steps[-1]
    assert f"{n} kernels of preset {PRESET} for sm_90a: {n} compiled in" in first.stdout
    assert f"cache: {cache}" in first.stdout and f"cute-kernels demo --preset {PRESET}" in first.stdout
    assert f"cute-kernels aot --arch sm_90a --preset {PRESET} --out" in first.stdout


def test_demo_json_without_gpu(compiled):
    cache, _, again = compiled
    data = json.loads(again.stdout)
    assert (data["mode"], data["preset"], data["arch"], data["compiled"], data["cached"]) == (
        "compile", PRESET, "sm_90a", 0, N_KERNELS)
    assert data["cache"].startswith(str(cache)) and len(data["kernels"]) == N_KERNELS
    assert all(k["source"] == "disk" and k["compile_seconds"] is None and k["load_seconds"] >= 0
               for k in data["kernels"])


def test_cache_json_and_text(compiled):
    cache = compiled[0]
    data = json.loads(run(["cache", "--json"], cache).stdout)
    assert data["root"] == str(cache) and data["count"] == N_KERNELS and data["cleared"] is False
    assert data["bytes"] == sum(e["bytes"] for e in data["entries"]) > 0 and data["root_bytes"] >= data["bytes"]
    assert {e["arch"] for e in data["entries"]} == {"sm_90a"}
    assert all(e["format"] in ("so", "o") for e in data["entries"])
    keys = run(["cache", "--keys"], cache).stdout.split()
    assert keys == [e["key"] for e in data["entries"]]


def test_cache_clear(tmp):
    cache = tmp / "doomed-cache"
    (cache / "v2-dsl-x").mkdir(parents=True)
    (cache / "v2-dsl-x" / "stray").write_bytes(b"1234")
    result = run(["cache", "--clear"], cache)
    assert result.returncode == 0 and f"removed {cache}" in result.stdout and not cache.exists()
    assert "0 kernels" in result.stdout


# -- the GPU demo's logic, on CPU tensors with the timing faked ---------------------------------
@pytest.fixture
def cpu_gpu_demo(monkeypatch):
    """The GPU demo on CPU tensors: every op runs its torch tier; the dispatcher's timing is
    faked to 2 us and the forced torch tier's to 6 us."""
    from dispatch import tiers

    forced = {}

    def time_per_call(make_inputs, call, *, bytes_per_call, check, poison, **_):
        assert bytes_per_call > 0
        inputs = make_inputs()
        poison(inputs)
        if not forced.get("skip_call"):
            call(*inputs)
        check(inputs)
        return {"cold_us": 6.0 if tiers.forced_tier(call.__self__.name) else 2.0}

    monkeypatch.setattr(timing, "time_per_call", time_per_call)
    warnings.simplefilter("ignore", RuntimeWarning)  # the torch-tier fallback's, for CPU tensors
    return forced


def test_gpu_demo_rows(cpu_gpu_demo):
    rows = cli.run_preset(presets.get("deepseek-v4-flash"), device="cpu", m_values=(1, 3))
    ops = [r["op"] for r in rows]
    assert ops == (["router_gemm"] * 2 + ["router_topk"] * 2 + ["norm_router_gemm"] * 2 + ["norm_router_topk"] * 2
                   + ["silu_mul_quant_fp8"] * 2 + ["pack_topk"] * 8)
    assert all(r["error"] is None and r["tier"] == "torch" and (r["cute_us"], r["torch_us"], r["speedup"]) ==
               (2.0, 6.0, 3.0) for r in rows), rows
    pack_inputs = [r["inputs"] for r in rows if r["op"] == "pack_topk"][::2]
    assert pack_inputs == ["i32,fp32", "i32,bf16", "i64,fp32", "i64,bf16"]
    table = cli.run_table(rows).splitlines()
    assert table[0].split() == ["op", "inputs", "M", "tier", "cute", "us", "torch", "us", "speedup"]
    assert table[1].split() == ["router_gemm", "bf16,bf16", "1", "torch", "2.00", "6.00", "3.0x"]


def test_gpu_demo_flags_outputs_left_poisoned(cpu_gpu_demo):
    cpu_gpu_demo["skip_call"] = True  # no tier writes the outputs: the poison must show
    rows = cli.run_preset(presets.get(PRESET), device="cpu", m_values=(2,))
    assert rows and all(r["error"] is not None and r["error"].startswith("tier torch: ") for r in rows), rows
    assert "WRONG RESULT: tier torch: " in cli.run_table(rows)


def test_gpu_demo_command_json_and_table(cpu_gpu_demo, monkeypatch, capsys):
    real = cli.run_preset
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(timing, "device_meta", lambda: {"device": "fake GPU", "sm_count": 132, "copy_gbps": 3000.0,
                                                         "graph_launch_floor_us": 0.6})
    monkeypatch.setattr(cli, "run_preset", lambda preset: real(preset, device="cpu", m_values=(1,)))
    assert cli.main(["demo", "--preset", PRESET, "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert (data["mode"], data["preset"], data["ok"], data["device"]["device"]) == ("run", PRESET, True, "fake GPU")
    assert [r["op"] for r in data["rows"]] == ["router_gemm", "router_topk", "silu_mul_quant_fp8"] + ["pack_topk"] * 4
    assert err.startswith("fake GPU: 132 SMs")
    assert cli.main(["demo", "--preset", PRESET]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:4] == ["router_gemm", "bf16,bf16,bf16", "1", "torch"]


# -- the spec checks' tolerances ------------------------------------------------------------------
def router_args(out_dtype):
    gen = torch.Generator().manual_seed(0)
    return {"x": torch.randn(4, 256, generator=gen).bfloat16(),
            "weight": torch.randn(16, 256, generator=gen).bfloat16(), "bias": None, "out_dtype": out_dtype}


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_logits_tolerance(out_dtype):
    a = router_args(out_dtype)
    want = spec.router_gemm(a["x"], a["weight"], None, out_dtype)
    assert tolerance.mismatch("router_gemm", a, (want,)) is None
    assert "logits" in tolerance.mismatch("router_gemm", a, (want * 1.01,))
    nan = want.clone()
    nan[0, 0] = float("nan")
    assert "NaN" in tolerance.mismatch("router_gemm", a, (nan,))
    assert "where the spec gives" in tolerance.mismatch("router_gemm", a, (want[:2],))


def test_silu_and_pack_tolerances():
    gen = torch.Generator().manual_seed(0)
    a = {"x": torch.randn(3, 512, generator=gen).bfloat16(), "group_size": 128, "scale_ub": None, "ue8m0": False,
         "scale_layout": "row"}
    q, s = spec.silu_mul_quant_fp8(a["x"], 128)
    assert tolerance.mismatch("silu_mul_quant_fp8", a, (q, s)) is None
    assert "scales differ" in tolerance.mismatch("silu_mul_quant_fp8", a, (q, s * 1.001))
    assert tolerance.mismatch("silu_mul_quant_fp8", a, (q, s * (1 + 1e-7))) is None
    wide = (q.float() * 1.5).to(q.dtype)
    assert "q values beyond one e4m3 step" in tolerance.mismatch("silu_mul_quant_fp8", a, (wide, s))
    ids, w = torch.randint(0, 32, (3, 4), dtype=torch.int32), torch.rand(3, 4)
    packed = spec.pack_topk(ids, w)
    assert tolerance.mismatch("pack_topk", {"ids": ids, "weights": w}, (packed,)) is None
    assert tolerance.mismatch("pack_topk", {"ids": ids, "weights": w}, (packed + 1,)) == "12 of 12 packed values differ"
