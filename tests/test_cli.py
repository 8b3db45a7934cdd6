"""Every program answers --help with its usage and exit status 0."""
import os
import subprocess
import sys

from common import ROOT

PROGRAMS = ("train", "eval", "convert", "bench", "online_eval", "masks")


def test_every_program_prints_its_usage_on_help():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    for name in PROGRAMS:
        r = subprocess.run([sys.executable, "-m", f"vjepa_jax.{name}", "--help"], cwd=ROOT,
                           capture_output=True, text=True, env=env, timeout=120)
        out = r.stdout + r.stderr
        assert r.returncode == 0, (name, out[-2000:])
        assert f"python -m vjepa_jax.{name}" in out and "Unknown command line flag" not in out, name
