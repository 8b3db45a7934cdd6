"""Mask sampling: static-shape invariants, parity of statistics with the reference collator."""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vjepa_jax import config as config_lib
from vjepa_jax import masks as masks_program
from vjepa_jax.methods.vjepa import masks

from common import load_config

VITL_GRID = (8, 14, 14)  # 16 frames / tubelet 2, 224 / 16
SHORT_HW = {(5, 5), (5, 6), (6, 4), (6, 5), (7, 4)}  # VJEPA_SPEC §3.5, spatial scale 0.15
LONG_HW = {(10, 13), (10, 14), (11, 12), (11, 13), (12, 11), (12, 12), (13, 10), (13, 11), (14, 10)}


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample(gen, key, batch):
    # One jit shared by all tests: equal (generator, batch) pairs compile once.
    return gen.sample_with_hidden(key, batch)


def _jit_sample(gen, seed, batch):
    return _sample(gen, jax.random.key(seed), batch)


def _reference_mean_stats(gen, batches, seed=1, batch=24):
    rng = np.random.default_rng(seed)
    stats = [masks.mask_stats(*masks.reference_masks(rng, batch, gen), gen.grid)
             for _ in range(batches)]
    return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}


@pytest.fixture(scope="module")
def vitl_gens():
    """The two reference generators with counts derived from the default config."""
    return masks.generators_from_config(config_lib.base_config())


SMALL = dict(grid=(4, 6, 6))
CASES = {
    "multiblock": masks.MaskGenerator(num_blocks=2, spatial_scale=(0.2, 0.4), num_context=32,
                                      num_target=64, **SMALL),
    # No placement can reach 120 hidden tokens: the fallback must still give disjoint sets.
    "multiblock_fallback": masks.MaskGenerator(num_blocks=1, spatial_scale=(0.2, 0.2),
                                               num_context=20, num_target=120,
                                               truncation="first", **SMALL),
    "tube": masks.MaskGenerator(kind="tube", tube_ratio=0.75, **SMALL),
    "causal": masks.MaskGenerator(kind="causal", context_frames=1, **SMALL),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_sets_are_static_sorted_disjoint_in_range(name):
    """Under jit every kind gives int32 [B, K] rows, strictly ascending, in [0, N), disjoint."""
    gen = CASES[name]
    ctx, tgt, _ = _jit_sample(gen, 0, 5)
    assert ctx.shape == (5, gen.num_context) and tgt.shape == (5, gen.num_target)
    assert ctx.dtype == jnp.int32 and tgt.dtype == jnp.int32
    ctx, tgt = np.asarray(ctx), np.asarray(tgt)
    assert gen.num_context >= 1
    for c, t in zip(ctx, tgt):
        assert np.all(np.diff(c) > 0) and np.all(np.diff(t) > 0)
        assert c.min() >= 0 and t.min() >= 0
        assert c.max() < gen.num_tokens and t.max() < gen.num_tokens
        assert not set(c) & set(t)


def test_same_key_same_masks_and_counts_independent_of_batch(vitl_gens):
    """Equal keys give equal masks, other keys other masks; counts do not depend on B."""
    gen = vitl_gens[0]
    a, b, c = (_jit_sample(gen, s, 24) for s in (7, 7, 8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    ctx, tgt, _ = _jit_sample(gen, 0, 2)
    assert ctx.shape == (2, 384) and tgt.shape == (2, 768)


def test_derived_counts_for_vitl(vitl_gens):
    """Default config: mean batch-min counts rounded to 64 give 384/768 and 128/1088."""
    assert [(g.num_context, g.num_target) for g in vitl_gens] == [(384, 768), (128, 1088)]
    assert all((g.num_context + g.num_target) % 64 == 0 for g in vitl_gens)


def test_numpy_reference_reproduces_spec_counts(vitl_gens):
    """Unrounded mean batch-min counts at B=24 are within 5% of VJEPA_SPEC §3.6
    (364/755 short-range, 100/1103 long-range)."""
    spec = [(364, 755), (100, 1103)]
    for gen, (ctx, tgt) in zip(vitl_gens, spec):
        got_ctx, got_tgt = masks.reference_counts(gen, batch_size=24, multiple=1)
        assert abs(got_ctx - ctx) <= 0.05 * ctx and abs(got_tgt - tgt) <= 0.05 * tgt


def test_statistics_close_to_reference(vitl_gens):
    """At B=24 on the ViT-L grid, context/target/hidden fractions are within 3 points of the
    reference collator (NumPy, 50 batches), and the mean hidden fraction within 3 points of 85%."""
    hidden = []
    for i, gen in enumerate(vitl_gens):
        ctx, tgt, _ = _jit_sample(gen, i, 24)
        ours = masks.mask_stats(ctx, tgt, gen.grid)
        ref = _reference_mean_stats(gen, 50)
        for key in ("context_fraction", "target_fraction", "hidden_fraction"):
            assert abs(ours[key] - ref[key]) < 0.03, (i, key, ours[key], ref[key])
        hidden.append(ours["hidden_fraction"])
    assert abs(np.mean(hidden) - 0.85) < 0.03


@pytest.fixture(scope="module")
def vitl_first(vitl_gens):
    """The reference generators with unrounded mean batch-min counts and truncation='first'."""
    out = []
    for gen in vitl_gens:
        ctx, tgt = masks.reference_counts(gen, 24, multiple=1)
        out.append(dataclasses.replace(gen, num_context=ctx, num_target=tgt, truncation="first"))
    return out


def test_first_truncation_reproduces_reference_temporal_bias(vitl_gens, vitl_first):
    """With unrounded counts and truncation='first', the mean last context time step over 16
    batches of 24 is within 0.3 of the reference's over 200 batches (~4.6 short, ~2.6 long)."""
    for i, gen in enumerate(vitl_first):
        ours = np.mean([masks.mask_stats(*_jit_sample(gen, s, 24)[:2], gen.grid)
                        ["last_context_time"] for s in range(16)])
        ref = _reference_mean_stats(gen, 200)["last_context_time"]
        assert abs(ours - ref) < 0.3, (i, ours, ref)
    # 'random' keeps context tokens from every time step instead.
    ctx, tgt, _ = _jit_sample(vitl_gens[1], 0, 24)
    assert masks.mask_stats(ctx, tgt, VITL_GRID)["last_context_time"] > 6.5


def test_first_truncation_is_prefix_of_union_and_complement(vitl_first):
    """truncation='first': for samples whose union fits the counts, targets are the lowest hidden
    indices and context the lowest visible indices of the sampled box union."""
    gen = vitl_first[0]
    ctx, tgt, hidden = (np.asarray(x) for x in _jit_sample(gen, 3, 24))
    union = hidden.sum(axis=1)
    valid = (union >= gen.num_target) & (union <= gen.num_tokens - gen.num_context)
    assert valid.sum() >= 20
    for c, t, h in zip(ctx[valid], tgt[valid], hidden[valid]):
        np.testing.assert_array_equal(t, np.flatnonzero(h)[:gen.num_target])
        np.testing.assert_array_equal(c, np.flatnonzero(~h)[:gen.num_context])


def test_select_first_matches_numpy_preference_order():
    """select('first') on arbitrary masks (incl. too few hidden or visible tokens) equals a NumPy
    lexicographic pick: targets by (not hidden, index), context by (is target, hidden, index)."""
    gen = masks.MaskGenerator(grid=(2, 4, 4), num_context=5, num_target=9, truncation="first")
    rng = np.random.default_rng(0)
    hidden = rng.random((6, 32)) < np.array([0.0, 0.1, 0.5, 0.8, 0.95, 1.0])[:, None]
    ctx, tgt = gen.select(jax.random.key(0), jnp.asarray(hidden))
    idx = np.arange(32)
    for h, c, t in zip(hidden, np.asarray(ctx), np.asarray(tgt)):
        want_t = np.sort(np.lexsort((idx, ~h))[:9])
        is_t = np.isin(idx, want_t)
        want_c = np.sort(np.lexsort((idx, h, is_t))[:5])
        np.testing.assert_array_equal(t, want_t)
        np.testing.assert_array_equal(c, want_c)


def test_select_random_is_uniform_among_equal_preference():
    """truncation='random': each hidden token is a target with probability Kt/#hidden, each
    visible token context with probability Kc/#visible (2000 rows, tolerance 0.05)."""
    gen = masks.MaskGenerator(grid=(1, 4, 4), num_context=3, num_target=2)
    hidden = jnp.broadcast_to(jnp.arange(16) < 8, (2000, 16))
    ctx, tgt = jax.jit(gen.select)(jax.random.key(1), hidden)
    tgt_freq = np.bincount(np.asarray(tgt).ravel(), minlength=16) / 2000
    ctx_freq = np.bincount(np.asarray(ctx).ravel(), minlength=16) / 2000
    np.testing.assert_allclose(tgt_freq[:8], 2 / 8, atol=0.05)
    np.testing.assert_allclose(ctx_freq[8:], 3 / 8, atol=0.05)
    assert tgt_freq[8:].sum() == 0 and ctx_freq[:8].sum() == 0


def test_block_size_table():
    """(h, w) for spatial scale 0.15 / 0.7 on 14x14 are those of VJEPA_SPEC §3.5, all of the
    short-range ones occur, and fixed aspect ratios match the host formula round(sqrt(n*a))."""
    for scale, table in ((0.15, SHORT_HW), (0.7, LONG_HW)):
        gen = masks.MaskGenerator(grid=VITL_GRID, spatial_scale=(scale, scale))
        keys = jax.random.split(jax.random.key(0), 400)
        t, h, w = jax.jit(jax.vmap(gen.sample_block_size))(keys)
        assert np.all(np.asarray(t) == 8)
        pairs = set(zip(np.asarray(h).tolist(), np.asarray(w).tolist()))
        assert pairs <= table
        if scale == 0.15:
            assert pairs == table
    for a in (0.8, 1.0, 1.2, 1.49):
        n_keep = int(196 * 0.15)
        want = (round(math.sqrt(n_keep * a)), round(math.sqrt(n_keep / a)))
        for bounds in ((a, a), (a, a * (1 + 1e-6))):  # host path and traced float32 path
            gen = masks.MaskGenerator(grid=VITL_GRID, aspect_ratio=bounds)
            _, h, w = gen.sample_block_size(jax.random.key(0))
            assert (int(h), int(w)) == want, (bounds, int(h), int(w), want)


def test_single_block_is_one_box_with_uniform_placement():
    """num_blocks=1, 1x3x3 block on a 2x6x6 grid: every target set is exactly one 1x3x3 box and
    row coverage matches uniform tops in [0, 3]: P = (1,2,3,3,2,1)/4 (4000 samples, tol 0.03)."""
    gen = masks.MaskGenerator(grid=(2, 6, 6), num_blocks=1, spatial_scale=(0.25, 0.25),
                              temporal_scale=(0.5, 0.5), aspect_ratio=(1.0, 1.0),
                              num_context=63, num_target=9, truncation="first")
    assert tuple(int(x) for x in gen.sample_block_size(jax.random.key(0))) == (1, 3, 3)
    _, tgt, hidden = _jit_sample(gen, 0, 4000)
    cover = np.zeros((4000, 72), bool)
    np.put_along_axis(cover, np.asarray(tgt), True, axis=1)
    np.testing.assert_array_equal(cover, np.asarray(hidden))
    cover = cover.reshape(4000, 2, 6, 6)
    # Nine covered tokens spanning 1 step, 3 rows and 3 columns: a full 1x3x3 box.
    assert np.all(cover.any(axis=(2, 3)).sum(axis=1) == 1)
    assert np.all(cover.any(axis=(1, 3)).sum(axis=1) == 3)
    assert np.all(cover.any(axis=(1, 2)).sum(axis=1) == 3)
    rows = cover.any(axis=(1, 3)).mean(axis=0)
    np.testing.assert_allclose(rows, np.array([1, 2, 3, 3, 2, 1]) / 4, atol=0.03)
    np.testing.assert_allclose(cover.any(axis=(2, 3)).mean(axis=0), [0.5, 0.5], atol=0.03)


def test_tube_and_causal_follow_their_definitions():
    """Tube: the same spatial positions hidden at every time step, int(HW*(1-ratio)) kept per
    step as in the reference; causal: context is exactly the first context_frames steps."""
    tube = CASES["tube"]
    ctx, tgt, hidden = (np.asarray(x) for x in _jit_sample(tube, 1, 5))
    per_step = hidden.reshape(5, 4, 36)
    assert np.all(per_step == per_step[:, :1])
    assert tube.num_context == int(36 * 0.25) * 4 == ctx.shape[1]
    assert tube.num_target == 144 - tube.num_context
    ref_visible = masks.reference_visible(np.random.default_rng(0), 3, tube)
    assert np.all(ref_visible.sum(axis=1) == tube.num_context)
    causal = CASES["causal"]
    ctx, tgt, _ = (np.asarray(x) for x in _jit_sample(causal, 0, 5))
    np.testing.assert_array_equal(ctx, np.tile(np.arange(36), (5, 1)))
    np.testing.assert_array_equal(tgt, np.tile(np.arange(36, 144), (5, 1)))


def test_max_temporal_keep_hides_late_steps():
    """max_temporal_keep=0.5 on 4 time steps: no context token from step >= 2."""
    gen = masks.MaskGenerator(grid=(4, 6, 6), num_blocks=1, spatial_scale=(0.2, 0.2),
                              max_temporal_keep=0.5, num_context=8, num_target=32)
    ctx, _, _ = _jit_sample(gen, 0, 8)
    assert np.asarray(ctx).max() < 2 * 36


def test_bad_settings_raise_clear_errors():
    """Invalid kinds, truncations and counts raise ValueError naming the offending value."""
    with pytest.raises(ValueError, match="kind='blocks'"):
        masks.MaskGenerator(kind="blocks")
    with pytest.raises(ValueError, match="truncation='last'"):
        masks.MaskGenerator(truncation="last")
    with pytest.raises(ValueError, match="exceeds the 1568 tokens"):
        masks.MaskGenerator(num_context=800, num_target=800)
    with pytest.raises(ValueError, match="num_context=0"):
        masks.MaskGenerator().sample(jax.random.key(0), 2)
    c = config_lib.base_config()
    c.masks[1].spatial_scale = (0.7, 0.5)
    with pytest.raises(ValueError, match=r"config.masks\[1\].*spatial_scale"):
        masks.generators_from_config(c)
    c = config_lib.base_config()
    c.model.num_frames, c.model.crop_size = 4, 32  # 2x2x2 grid: 8 tokens
    with pytest.raises(ValueError, match="mask_count_multiple=64"):
        masks.generators_from_config(c)


def test_mask_stats_by_hand():
    """Fractions and mean last context time step on a hand-made batch (grid 2x2x2)."""
    ctx = np.array([[0, 1], [0, 5]])  # last steps 0 and 1
    tgt = np.array([[2, 3, 4], [1, 2, 3]])
    s = masks.mask_stats(ctx, tgt, (2, 2, 2))
    assert s["context_fraction"] == 0.25 and s["target_fraction"] == 0.375
    assert s["hidden_fraction"] == 0.75 and s["dropped_fraction"] == 0.375
    assert s["last_context_time"] == 0.5


def test_describe_writes_figure(tmp_path, monkeypatch):
    """describe() on a tiny grid prints counts for every generator, explains `last context t`,
    and saves a PNG whose target-frequency panels have a 0..1 colour bar."""
    figures = []
    plot_masks = masks_program.plot_masks
    monkeypatch.setattr(masks_program, "plot_masks",
                        lambda *args: figures.append(plot_masks(*args)) or figures[-1])
    c = config_lib.base_config()
    c.model.num_frames, c.model.crop_size = 4, 64  # 2x4x4 grid
    c.mask_count_multiple, c.mask_reference_batch = 4, 4
    out = tmp_path / "masks.png"
    report = masks_program.describe(c, seed=0, out=str(out), reference_batches=2)
    assert report.count("static counts") == 2
    assert report.count("last context t ") == 4  # this batch + reference, per generator
    assert ("last context t: the last time step, of 0..1, that holds a context token, mean over "
            "the batch") in report
    assert out.stat().st_size > 1000
    (fig,) = figures
    freq_panels = [ax for ax in fig.axes if ax.get_title().startswith("target freq.")]
    assert len(freq_panels) == 2
    for ax in freq_panels:
        bar = ax.get_images()[0].colorbar
        assert bar is not None and (bar.norm.vmin, bar.norm.vmax) == (0, 1)
    # The program: no absl INFO lines (on a CPU jax logs "Unable to initialize backend 'tpu'").
    import re
    import subprocess
    import sys

    from common import ROOT

    r = subprocess.run([sys.executable, "-m", "vjepa_jax.masks", "--config",
                        "configs/pretrain/demo.py", "--out", str(tmp_path / "demo.png")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not re.search(r"^I\d{4} ", r.stderr, re.M) and "libtpu" not in r.stderr, r.stderr
    assert "last context t: the last time step, of 0..3" in r.stdout


def test_demo_follows_the_spec_and_the_causal_variant_is_causal():
    """configs/pretrain/demo.py (and its old name `:reference`) has the spec's masks (8 blocks at
    0.15, 2 at 0.7) and EMA 0.998 -> 1.0; `:causal`: context = the first 1 / 2 of 4 time steps,
    targets = the rest, EMA from 0.99."""
    demo = load_config("configs/pretrain/demo.py", "causal")
    assert tuple(demo.optim.ema) == (0.99, 1.0)
    per_step = 8 * 8  # 64 / 8 patches squared per time step; 8 frames / tubelet 2 = 4 steps
    gens = masks.generators_from_config(demo)
    assert len(gens) == 2
    for gen, frames in zip(gens, (1, 2)):
        ctx, tgt = (np.asarray(a) for a in gen.sample(jax.random.key(3), 2))
        seen = frames * per_step
        for b in range(2):
            np.testing.assert_array_equal(np.sort(ctx[b]), np.arange(seen))
            np.testing.assert_array_equal(np.sort(tgt[b]), np.arange(seen, 4 * per_step))
    for arg in (None, "reference"):
        ref = load_config("configs/pretrain/demo.py", arg)
        assert [(m.kind, m.num_blocks, m.spatial_scale) for m in ref.masks] == [
            ("multiblock", 8, (0.15, 0.15)), ("multiblock", 2, (0.7, 0.7))]
        assert tuple(ref.optim.ema) == (0.998, 1.0)
    with pytest.raises(ValueError, match="'bogus'"):
        load_config("configs/pretrain/demo.py", "bogus")
