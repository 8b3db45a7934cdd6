"""The benchmark runs on CPU with a tiny config and reports consistent numbers."""
import subprocess
import sys

import pytest

from common import ROOT, load_config, smoke_config
from vjepa_jax import bench, flops, methods


def test_bench_reports_consistent_numbers():
    config = smoke_config()
    config.mesh.update(data=1, fsdp=1)
    config.data.update(source="csv", index=())  # a real-data config, no index given: not read
    r = bench.bench(config, steps=2, warmup=0, peak_tflops=1.0)
    assert r["step_s"] > 0 and r["compile_s"] > 0 and r["peak_memory_gb"] > 0
    assert r["clips_per_s"] == pytest.approx(config.data.batch_size / r["step_s"])
    assert r["mfu"] == pytest.approx(r["model_tflop_per_step"] / r["step_s"] / 1.0)
    # The tests run with a persistent compilation cache (conftest.py); the report says so.
    assert r["compilation_cache"] and isinstance(r["cache_was_warm"], bool)


def test_compilation_cache_is_on_by_default_and_switchable(tmp_path, monkeypatch):
    import jax

    from vjepa_jax import compilation_cache, config as config_lib

    assert config_lib.base_config().train.compilation_cache  # on by default
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    try:
        assert compilation_cache.enable("") is None
        assert jax.config.jax_compilation_cache_dir == before  # '' leaves it off
        where = str(tmp_path / "cache")
        assert compilation_cache.enable(where) == where
        assert jax.config.jax_compilation_cache_dir == where
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/somewhere")
    assert compilation_cache.enable(where) == "/somewhere"  # the environment wins


def test_flops_match_the_reference_step_count():
    """With the reference's token counts (364/755, 100/1103) ViT-L at batch 24 is ~61 TFLOP/step."""
    c = load_config("configs/pretrain/vitl16.py")
    for m, (kc, kt) in zip(c.masks, ((364, 755), (100, 1103))):
        m.update(num_context=kc, num_target=kt)
    assert methods.get("vjepa").build(c).flops(24) / 1e12 == pytest.approx(61.0, rel=0.02)


def test_vit_forward_flops_by_hand():
    # 1 block, 2 tokens, width 4, hidden 8: matmuls 2*2*(48+16+64)=512, attention 4*4*4=64.
    assert flops.vit_forward(2, 4, 1, 8) == 512 + 64


def test_bench_cli_rejects_bad_config():
    r = subprocess.run([sys.executable, "-m", "vjepa_jax.bench", "--config",
                        "configs/pretrain/demo.py:smoke", "--config.data.batch_size=7",
                        "--config.mesh.data=2", "--steps=1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "batch_size=7" in r.stderr and "Traceback" not in r.stderr
