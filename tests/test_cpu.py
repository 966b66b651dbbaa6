"""The CPU description (engine/cpu.py) and the AVX2 pins of MKL and oneDNN (engine/determinism.py):
torch-free, parsed from /proc/cpuinfo with a fallback, recorded by --stats-json, and a user's
own MKL_CBWR / ONEDNN_MAX_CPU_ISA win over igan's defaults."""
import json
import os
import subprocess
import sys

import pytest

from igan.engine import cpu

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: SomeoneElse
model name\t: not the first
"""


def test_cpuinfo_parses_the_first_processor(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    info = cpu._cpuinfo(str(path))
    assert info["model name"] == "AMD EPYC 9654 96-Core Processor" and info["vendor_id"] == "AuthenticAMD"
    assert info["cpu family"] == "25" and info["model"] == "17"
    assert cpu._cpuinfo(str(tmp_path / "missing")) == {}


@pytest.mark.parametrize("flags, level", [
    (["sse4_2", "avx", "fma", "avx2"], "avx2"),
    (["avx2", "fma", "avx512f"], "avx512"),
    (["avx2", "fma", "avx512f", "avx512_bf16"], "avx512_bf16"),
    (["avx2", "fma", "avx512f", "amx_tile"], "amx"),
    (["avx"], "avx"),
    ([], "baseline"),
])
def test_isa_level(flags, level):
    assert cpu.isa_level(flags) == level


def test_onednn_isa_follows_the_cap():
    assert cpu._onednn_isa("avx512_bf16", None) == "avx512_core_bf16"
    assert cpu._onednn_isa("avx512_bf16", "ALL") == "avx512_core_bf16"
    assert cpu._onednn_isa("avx512_bf16", "AVX2").startswith("avx2 (capped")
    assert cpu._onednn_isa("avx2", "AVX2") == "avx2"  # a cap above the CPU changes nothing
    assert cpu._onednn_isa("avx2", "AVX512_CORE") == "avx2"


def test_describe_names_this_cpu_and_its_switches():
    d = cpu.describe()
    assert d["model"] and d["arch"] and d["logical_cpus"] >= 1
    assert set(d["isa_flags"]) <= set(cpu.ISA_FLAGS)
    assert set(cpu.SWITCHES) <= set(d["numerics"]) and d["numerics"]["onednn_isa"]
    json.dumps(d)  # it goes into JSON files as is
    line = cpu.summary(d)
    assert d["model"] in line and "oneDNN" in line and "MKL" in line


def test_describe_without_proc_cpuinfo(monkeypatch):
    monkeypatch.setattr(cpu, "_cpuinfo", lambda path="/proc/cpuinfo": {})
    d = cpu.describe()
    assert d["model"] and d["isa_flags"] == [] and d["isa_level"] == "unknown" and d["vendor"] is None
    assert "no ISA flags known" in cpu.summary(d)


def test_set_pins_keeps_a_users_value():
    env = {"MKL_CBWR": "AUTO,STRICT"}
    cpu.set_pins(env)
    assert env == {"MKL_CBWR": "AUTO,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2", cpu.PINNED: "ONEDNN_MAX_CPU_ISA"}
    cpu.set_pins(env)  # a worker process inherits the environment: nothing changes
    assert env[cpu.PINNED] == "ONEDNN_MAX_CPU_ISA"


def test_bf16_lifts_only_igans_own_onednn_cap():
    env = {}
    cpu.set_pins(env)
    assert env[cpu.PINNED] == "MKL_CBWR,ONEDNN_MAX_CPU_ISA"
    assert not cpu.unpin_onednn_for("fp32", env) and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert cpu.unpin_onednn_for("bf16", env)
    assert env == {"MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "ALL", cpu.PINNED: "MKL_CBWR"}
    cpu.set_pins(env)  # a worker process keeps the lifted cap
    assert env["ONEDNN_MAX_CPU_ISA"] == "ALL"
    users = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    cpu.set_pins(users)
    assert not cpu.unpin_onednn_for("bf16", users) and users["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def _probe(env: dict) -> dict:
    """engine/cpu.py's description in a fresh process that imported igan (and so torch) with `env`."""
    code = ("import json, sys; import igan.engine; assert 'torch' not in sys.modules; "
            "import igan.engine.model; from igan.engine import cpu, determinism; "
            "print(json.dumps(cpu.describe()['numerics'] | {'mode': determinism.mkl_mode()}))")
    base = {k: v for k, v in os.environ.items() if k not in (*cpu.SWITCHES, cpu.PINNED)}
    done = subprocess.run([sys.executable, "-c", code], env=base | env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pins_by_default_and_the_environment_wins():
    """igan holds MKL and oneDNN to their AVX2 branch unless the environment names another; MKL
    runs a pinned branch on Intel CPUs only (elsewhere strict AUTO, which there is its AVX2 code)."""
    default = _probe({})
    assert default["MKL_CBWR"] == "AVX2,STRICT" and default["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert default["mode"] in ("strict", "strict-auto", "unavailable")
    if default["mode"] == "strict":
        assert default["mkl_cbwr_effective"] == "AVX2,STRICT"
    elif default["mode"] == "strict-auto":
        assert default["mkl_cbwr_effective"] == "AUTO,STRICT"
    assert default["onednn_isa"].startswith("avx2") or default["onednn_isa"] in ("avx", "sse41")
    native = _probe({"MKL_CBWR": "AUTO,STRICT", "ONEDNN_MAX_CPU_ISA": "ALL"})
    assert native["MKL_CBWR"] == "AUTO,STRICT" and native["ONEDNN_MAX_CPU_ISA"] == "ALL"
    assert native["mode"] in ("strict", "unavailable") and "capped" not in native["onednn_isa"]
    if native["mode"] == "strict":
        assert native["mkl_cbwr_effective"] == "AUTO,STRICT"


@pytest.mark.slow
def test_stats_json_records_the_cpu(tmp_path):
    stats = tmp_path / "s.json"
    done = subprocess.run([sys.executable, "-m", "igan.engine.cli.render", "--width", "64", "--height", "32",
                           "--device", "cpu", "--quiet", "--out", str(tmp_path / "a.png"), "--stats-json", str(stats)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads(stats.read_text())["cpu"]
    assert got["model"] == cpu.describe()["model"] and got["numerics"]["onednn_isa"]
    assert "aten_capability" in got["numerics"]  # asked in the rendering process, where torch is loaded


AVX512 = ["sse4_2", "avx", "fma", "avx2", "avx512f", "avx512dq", "avx512bw", "avx512vl"]


@pytest.mark.parametrize("vendor,flags,family", [
    ("GenuineIntel", ["sse4_2", "avx", "fma", "avx2"], "avx2"),  # the AVX2-only machine of igan 0.1-0.4
    ("AuthenticAMD", AVX512 + ["avx512_bf16"], "avx2"),  # MKL keeps AUTO on AMD: the AVX2 family's bytes
    ("GenuineIntel", AVX512 + ["avx512_bf16", "amx_tile"], "intel-amx"),  # MKL honours the AVX2 pin: other bytes
    ("GenuineIntel", AVX512, "intel-avx512"),  # not measured yet: a family of its own until it is
])
def test_bytes_family_groups_the_cpus_that_compute_the_same_bytes(vendor, flags, family):
    d = {"vendor": vendor, "isa_flags": flags, "isa_level": cpu.isa_level(flags)}
    assert cpu.bytes_family(d) == family


def test_this_cpu_has_output_hashes_of_its_family_or_says_how_to_record_them():
    """The tests that compare bytes with recorded hashes (conftest.recorded_hash) look for this
    CPU's family's file; a family without one is named with the command that records it."""
    from pathlib import Path

    family = cpu.bytes_family()
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    name = "output-hashes-0.2.json" if family == "avx2" else f"output-hashes-0.2.{family}.json"
    if not (results / name).exists():
        pytest.skip(f"no hashes recorded for {family!r} yet")
    recorded = json.loads((results / name).read_text())["_cpu"] if family != "avx2" else None
    assert recorded is None or cpu.bytes_family(recorded) == family
