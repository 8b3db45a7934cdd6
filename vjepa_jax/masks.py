"""Draw the context/target masks of a pretraining config and compare them with the reference.

    python -m vjepa_jax.masks --config configs/pretrain/vitl16.py --out masks.png [--seed N]

Prints, per mask generator, the static token counts, the effective ratios of one sampled batch
and the same ratios of the reference collator (batch-min truncated, mean of 50 batches).
"""
import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from vjepa_jax import cli
from vjepa_jax.methods.ijepa import masks as ijepa_masks
from vjepa_jax.methods.vjepa.masks import generators_from_config, mask_stats, reference_masks


def _format_stats(s):
    pct = {k: 100 * v for k, v in s.items() if k.endswith("fraction")}
    return (f"context {pct['context_fraction']:.1f}%  target {pct['target_fraction']:.1f}%  "
            f"hidden {pct['hidden_fraction']:.1f}%  dropped {pct['dropped_fraction']:.1f}%  "
            f"last context t {s['last_context_time']:.2f}")


def plot_masks(gens, batches, path):
    """Save a figure: per generator, sample 0 as T' panels [H', W'] and the target frequency
    (how often each position is a target, over the batch and the time steps); returns it."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colors = ["#d9d9d9", "#1f77b4", "#ff7f0e"]  # dropped, context, target
    cols = max(g.grid[0] for g in gens) + 1
    # At least 4.5 in wide: the legend of the three colours (I-JEPA has only 2 columns).
    fig = Figure(figsize=(max(1.5 * cols, 4.5), 1.7 * len(gens) + 0.6))
    axes = fig.subplots(len(gens), cols, squeeze=False)
    for row, (gen, (ctx, tgt)) in enumerate(zip(gens, batches)):
        ctx, tgt = np.asarray(ctx), np.asarray(tgt)
        n_t, n_h, n_w = gen.grid
        label = np.zeros(gen.num_tokens, int)
        label[ctx[0]], label[tgt[0]] = 1, 2
        for t in range(cols - 1):
            ax = axes[row, t]
            if t < n_t:
                ax.imshow(label.reshape(gen.grid)[t], cmap=ListedColormap(colors), vmin=0, vmax=2)
                ax.set_title(f"t={t}", fontsize=8)
        freq = np.zeros((len(tgt), gen.num_tokens))
        np.put_along_axis(freq, tgt, 1.0, axis=1)
        ax = axes[row, -1]
        image = ax.imshow(freq.reshape(-1, n_h, n_w).mean(axis=0), cmap="viridis", vmin=0, vmax=1)
        # A scale, or a uniform frequency (causal masks: every position in 3 of 4 steps) is a
        # flat square that reads as nothing.
        fig.colorbar(image, ax=ax, ticks=[0, 0.5, 1], fraction=0.046, pad=0.04).ax.tick_params(
            labelsize=7)
        over = f"B={len(tgt)}" + (f" x {n_t} t" if n_t > 1 else "")
        ax.set_title(f"target freq. ({over})", fontsize=8)
        axes[row, 0].set_ylabel(f"{row}: {gen.kind}\n{ctx.shape[1]} ctx / {tgt.shape[1]} tgt",
                                fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.legend(handles=[Patch(color=c, label=l) for c, l in
                        zip(colors, ["dropped", "context", "target"])], loc="lower center", ncol=3)
    fig.savefig(path, dpi=100)
    return fig


def _describe_vjepa(config, seed, out, reference_batches):
    """V-JEPA: one batch per generator against the reference's batch-min statistics."""
    gens = generators_from_config(config)
    batch = config.mask_reference_batch
    rng = jax.random.key(seed)
    lines, batches = [], []
    for i, gen in enumerate(gens):
        ctx, tgt = jax.jit(gen.sample, static_argnums=1)(jax.random.fold_in(rng, i), batch)
        batches.append((ctx, tgt))
        np_rng = np.random.default_rng(seed + i)
        ref = [mask_stats(*reference_masks(np_rng, batch, gen), gen.grid)
               for _ in range(reference_batches)]
        ref = {k: float(np.mean([r[k] for r in ref])) for k in ref[0]}
        lines.append(f"mask {i} ({gen.kind}, truncation={gen.truncation}): static counts "
                     f"{gen.num_context} context / {gen.num_target} target of {gen.num_tokens} "
                     "tokens")
        lines.append(f"  this batch (B={batch}): {_format_stats(mask_stats(ctx, tgt, gen.grid))}")
        lines.append(f"  reference batch-min (B={batch}, mean of {reference_batches} batches): "
                     f"{_format_stats(ref)}")
    lines.append(f"(last context t: the last time step, of 0..{gens[0].grid[0] - 1}, that holds a "
                 "context token, mean over the batch; causal masks end their context there)")
    if out:
        plot_masks(gens, batches, out)
        lines.append(f"wrote {out}")
    return "\n".join(lines)


def _describe_ijepa(config, seed, out, reference_batches):
    """I-JEPA: one batch (context + M target blocks) against the reference collator."""
    gen = ijepa_masks.generators_from_config(config)[0]
    batch = config.mask_reference_batch
    ctx, tgt = jax.jit(gen.sample, static_argnums=1)(jax.random.key(seed), batch)
    np_rng = np.random.default_rng(seed)
    ref = [ijepa_masks.mask_stats(*ijepa_masks.reference_masks(np_rng, batch, gen, b), gen.side)
           for b in range(reference_batches)]
    ref = {k: float(np.mean([r[k] for r in ref])) for k in ref[0]}
    fmt = lambda st: (f"context {100 * st['context_fraction']:.1f}%  target block "
                      f"{100 * st['target_fraction']:.1f}%  union of the blocks "
                      f"{100 * st['union_fraction']:.1f}%")
    lines = [f"masks (I-JEPA blocks, truncation={gen.truncation}): static counts "
             f"{gen.num_context} context / {gen.num_blocks} x {gen.num_target} target of "
             f"{gen.num_tokens} tokens",
             f"  this batch (B={batch}): {fmt(ijepa_masks.mask_stats(ctx, tgt, gen.side))}",
             f"  reference batch-min (B={batch}, mean of {reference_batches} batches): {fmt(ref)}"]
    if out:  # one row per target block, each beside the same context
        plot_masks([gen] * gen.num_blocks, [(ctx, block) for block in tgt], out)
        lines.append(f"wrote {out}")
    return "\n".join(lines)


DESCRIBE = {"vjepa": _describe_vjepa, "ijepa": _describe_ijepa}


def describe(config, seed=0, out=None, reference_batches=50):
    """Sample one batch of the config's masks, optionally plot it to `out`; returns the report."""
    if config.method not in DESCRIBE:
        raise ValueError(f"config.method={config.method!r}: masks can be drawn for "
                         f"{sorted(DESCRIBE)}")
    return DESCRIBE[config.method](config, seed, out, reference_batches)


def main():
    """CLI entry point: parse --config (ml_collections file), --out, --seed and print the report."""
    config = config_flags.DEFINE_config_file("config", None, "Python config file (get_config).")
    out = flags.DEFINE_string("out", "masks.png", "Where to save the figure.")
    seed = flags.DEFINE_integer("seed", 0, "Random seed for the sampled batch.")
    flags.mark_flag_as_required("config")

    def run(argv):
        del argv
        print(describe(config.value, seed=seed.value, out=out.value))

    # As the other programs: one-line errors, and absl logging at WARNING (jax logs a `libtpu`
    # INFO line on a CPU).
    cli.run_program(run, "vjepa_jax.masks")


if __name__ == "__main__":
    main()
