"""launch/gpu_check.sh dry run: every step of the one-call GPU script on the CPU with tiny
configs, so the minutes of a GPU session are never lost to a typo (issue 22, Part 1 item 6)."""
import json
import os
import subprocess
import sys

import pytest

from common import ROOT


@pytest.mark.slow
def test_gpu_check_dry_run_writes_a_json_per_bench_and_the_table(tmp_path):
    out = tmp_path / "gpu_check"
    env = dict(os.environ, DRY_RUN="1", PYTHON=sys.executable, BENCH_STEPS="1", TOTAL_BUDGET="5000",
               BENCHES="vitl16 vitl16_bf16 vitl16_fused vitl16_xla_flags vjepa2_vitl nonsense")
    run = subprocess.run(["bash", os.path.join(ROOT, "launch/gpu_check.sh"), str(out)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "unknown bench nonsense" in run.stderr
    for name in ("vitl16", "vitl16_bf16", "vitl16_fused", "vitl16_xla_flags", "vjepa2_vitl"):
        result = json.load(open(out / f"bench_{name}.json"))
        assert "failed" not in result, result
        assert result["step_s"] > 0 and result["model"] == "tiny"
    table = (out / "bench.md").read_text().splitlines()
    assert table[0].startswith("| bench | model |") and len(table) == 7  # header, rule, 5 rows
    assert (out / "gpu.txt").read_text().startswith("dry run on")


def test_gpu_check_skips_what_its_time_budget_cannot_hold(tmp_path):
    # The one-call budget: with TOTAL_BUDGET below one bench's timeout every bench is recorded
    # as skipped and the table still written, the whole script in seconds.
    out = tmp_path / "gpu_check"
    env = dict(os.environ, DRY_RUN="1", PYTHON=sys.executable, TOTAL_BUDGET="1",
               BENCHES="vitl16_scan vith16")
    run = subprocess.run(["bash", os.path.join(ROOT, "launch/gpu_check.sh"), str(out)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for name in ("vitl16_scan", "vith16"):
        assert json.load(open(out / f"bench_{name}.json"))["failed"] == "skipped (TOTAL_BUDGET)"
    assert "| vith16 | skipped (TOTAL_BUDGET)" in (out / "bench.md").read_text()
