"""One override path syntax for systems: `tokenstack check SYSTEM --set`, `tokenstack run SYSTEM --set` and a
sweep's `[params]` all take `gpu_stack.layout.pim_dies=2`, `gpu_stack.dram.clock.data_rate_gbps=10`,
`gpu.<key>`, `gpu_link.<key>`, `pim_device.stack.<key>` ... (config/loader.py `apply_overrides`). An override
adds or replaces one key and never drops another setting (the stack preset's own `dram_set` stays); a bad
path is one line on stderr naming the path and the valid keys.

Runs use Llama-3.1-8B with --memory-timing roofline on systems without a PIM tier, so nothing is characterized.
"""

from __future__ import annotations

import json

import pytest

from tokenstack_sim.config.loader import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.sweep.overrides import system_overrides
from _cli import one_line_error, tokenstack  # tests/_cli.py

pytestmark = pytest.mark.unit

FAST = ("--model", "llama-3.1-8b", "--memory-timing", "roofline", "--qps", "2", "--duration", "3",
        "--format", "json")


def rows(capsys, *args) -> list[dict]:
    code, out, err = tokenstack(capsys, "run", *args, *FAST)
    assert code == 0, err
    return json.loads(out)


# ------------------------------------------------------------------------------------------ check --set

def test_check_set_reaches_into_the_stack_preset(capsys):
    code, out, err = tokenstack(capsys, "check", "tokenstack-hbm4", "--set", "gpu_stack.layout.pim_dies=2")
    assert code == 0, err
    assert "(2 PIM)" in out and out.strip().endswith("ok")
    s = load_config("tokenstack-hbm4", ["gpu_stack.layout.pim_dies=2"], kind="system")
    assert sum(d.kind == "pim" for d in s.gpu_stack.dies) == 2


def test_sweep_params_are_the_check_set_strings():
    params = {"memory_utilization": 0.8, "gpu_stack.layout.pim_dies": 2, "gpu_stack.dram": "hbm4-ramulator21",
              "gpu.sm_count": 100}
    sets = system_overrides("tokenstack-hbm4", params)
    assert sets == ["memory_utilization=0.8", "gpu_stack.layout.pim_dies=2", 'gpu_stack.dram="hbm4-ramulator21"',
                    "gpu.sm_count=100"]
    s = load_config("tokenstack-hbm4", sets, kind="system")
    assert s.config.memory_utilization == 0.8 and s.gpu.config.sm_count == 100
    assert sum(d.kind == "pim" for d in s.gpu_stack.dies) == 2


def test_dram_override_keeps_the_stacks_own_dram_set():
    own = load_config("tokenstack-hbm4", kind="system").gpu_stack
    assert own.config.dram_set == ("controller.write_max_age_cycles=256",)  # the stack preset's own setting
    # (a DRAM key outside the clock, whose rate/period rule config/dram.py owns; the path is the same)
    for sets in (["gpu_stack.dram.controller.read_queue=64", "gpu_stack.dram.controller.write_queue=48"],
                 ['gpu_stack.dram_set=["controller.read_queue=64", "controller.write_queue=48"]'],  # appended
                 ['stack_set=["dram.controller.read_queue=64", "dram.controller.write_queue=48"]']):
        st = load_config("tokenstack-hbm4", sets, kind="system").gpu_stack
        ctl = st.dram.config.controller
        assert (ctl.read_queue, ctl.write_queue, ctl.write_max_age_cycles) == (64, 48, 256), sets
        assert st.config.dram_set[0] == "controller.write_max_age_cycles=256", sets


def test_system_set_lists_are_appended_to():
    # attacc-hbm4's own pim_device.stack_set scopes all-bank commands to the channel; a --set of the list
    # (as the preset's comment suggests) or into the preset keeps it
    for sets in (['pim_device.stack_set=["layout.pim_layer_capacity_factor=1.0"]', "pim_device.stack.pim.lanes=8"],
                 ["pim_device.stack.layout.pim_layer_capacity_factor=1.0", "pim_device.stack.pim.lanes=8"]):
        s = load_config("attacc-hbm4", sets, kind="system")
        assert s.pim_stack.config.pim.mode_scope == "channel", sets
        assert s.pim_stack.config.layout.pim_layer_capacity_factor == 1.0 and s.pim_stack.config.pim.lanes == 8


def test_a_file_extending_a_preset_adds_to_its_set_lists(tmp_path):
    # attacc-hbm4 says pim_device.stack_set = ['pim.mode_scope="channel"']; a file based on it that gives its
    # own list keeps that entry (a file's list used to replace its base's), and the stack's own dram_set too
    f = tmp_path / "attacc-lanes8.toml"
    f.write_text('schema_version = 1\nkind = "system"\nbase = "attacc-hbm4"\nname = "attacc-lanes8"\n'
                 '[pim_device]\nstack_set = ["pim.lanes=8", "dram.controller.read_queue=64"]\n')
    s = load_config(str(f), kind="system")
    assert s.pim_stack.config.pim.mode_scope == "channel" and s.pim_stack.config.pim.lanes == 8
    ctl = s.pim_stack.dram.config.controller
    assert (ctl.read_queue, ctl.write_max_age_cycles) == (64, 256)


def test_link_overrides_reach_the_link_presets():
    s = load_config("attacc-hbm4", ["gpu_link.latency_us=7.5", "host_link.bw_per_direction_GBps=10",
                                    "pim_device.link.bw_efficiency=0.5"], kind="system")
    assert s.gpu_link.config.latency_us == 7.5
    assert s.host_link.config.bw_per_direction_GBps == 10
    assert s.pim_link.config.bw_efficiency == 0.5


def test_a_sweep_over_a_dram_key_keeps_the_stacks_setting(tmp_path):
    from tokenstack_sim.sweep.points import expand, job
    from tokenstack_sim.sweep.spec import load_sweep_spec

    spec = tmp_path / "dram.toml"
    spec.write_text('schema_version = 1\nname = "dram"\nsystems = ["tokenstack-hbm4"]\nmodels = ["llama-3.1-8b"]\n'
                    'workloads = ["azure-conv-like"]\nqps = [2.0]\nseeds = [0]\nduration_s = 3.0\n'
                    '[engine]\nmemory_timing = "roofline"\n'
                    '[params]\n"gpu_stack.dram.controller.read_queue" = [16, 64]\n[sampling]\nmethod = "grid"\n')
    sw = load_sweep_spec(spec)  # checks each parameter on the system ("'dram' is not a table" before)
    seen = set()
    for point in expand(sw):
        j = job(sw, point)
        st = load_config(j.system, list(j.overrides), kind="system").gpu_stack
        assert st.dram.config.controller.write_max_age_cycles == 256
        seen.add(st.dram.config.controller.read_queue)
    assert seen == {16, 64}


# ------------------------------------------------------------------------------------------ run --set

def test_run_set_changes_the_result(capsys):
    (ts,) = rows(capsys, "tokenstack-hbm4", "--set", "gpu_stack.layout.pim_dies=0")
    assert ts["system"] == "tokenstack-hbm4[gpu_stack.layout.pim_dies=0]" and ts["status"] == "ok"
    assert ts["pim_attention_pct"] == 0.0
    base, fewer = rows(capsys, "gpu-hbm4"), rows(capsys, "gpu-hbm4", "--set", "gpu_stacks_per_gpu=2",
                                                  "--set", "name=gpu-hbm4-2stacks")
    assert fewer[0]["system"] == "gpu-hbm4-2stacks"
    # a quarter of the stacks: decode is slower (measured 1.38 vs 0.97 ms; launch and all-reduce times stay)
    assert fewer[0]["tpot_ms_p50"] > 1.2 * base[0]["tpot_ms_p50"]


def test_run_set_applies_to_every_system(capsys):
    out = rows(capsys, "gpu-hbm4", "tokenstack-hbm4", "--set", "gpu_stack.layout.pim_dies=0")
    assert [r["system"] for r in out] == ["gpu-hbm4[gpu_stack.layout.pim_dies=0]",
                                          "tokenstack-hbm4[gpu_stack.layout.pim_dies=0]"]
    # a path one of the systems lacks is refused before anything runs
    msg = one_line_error(capsys, "run", "gpu-hbm4", "attacc-hbm4", "--set", "pim_device.pim_stacks=2", *FAST)
    assert "pim_device" in msg


# ------------------------------------------------------------------------------------------ bad paths

@pytest.mark.parametrize("path, named", [
    ("gpu_stack.layout.pim_diez=2", ["gpu_stack.layout.pim_diez", "pim_dies", "sids"]),
    ("gpu_stack.dram.clock.nope=1", ["gpu_stack.dram.clock.nope", "data_rate_gbps"]),
    ("gpu.nope=1", ["gpu.nope", "sm_count"]),
    ("nope=1", ["nope", "gpu_stack", "memory_utilization"]),
    ("name.x=1", ["name.x", "not a table", "gpu_stack.<key>"]),
    ("pim_device.stack.pim.lanes=8", ["pim_device", "no [pim_device] table"]),
    ("gpu_stack.layout.pim_dies", ["expected key.path=value"]),
])
def test_bad_paths_are_one_line_errors(capsys, path, named):
    for cmd in (("check", "tokenstack-hbm4"), ("run", "tokenstack-hbm4", *FAST)):
        msg = one_line_error(capsys, *cmd, "--set", path)
        for word in named:
            assert word in msg, (cmd[0], msg)


def test_set_list_items_must_be_strings():
    with pytest.raises(InputError, match="KEY=VALUE strings"):
        load_config("tokenstack-hbm4", ["stack_set=[1]"], kind="system")
