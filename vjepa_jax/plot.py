"""Plot loss curves and collapse signals from DIR/metrics.jsonl to DIR/metrics.png.

    python -m vjepa_jax.plot --workdir DIR

A grid of up to three panels a row (six panels: 1500 x 900 px), each with labelled axes.
"""
import argparse
import os
import re
import sys

from matplotlib.figure import Figure

from vjepa_jax import logger

DPI = 100
PANEL_SIZE = (5.0, 4.5)  # inches per panel: 3 x 2 panels -> 1500 x 900 px at DPI
COLUMNS = 3

# (title, y label, keys, log y). Keys as logged by train.py; `loss_*` (one per mask generator:
# 2 for V-JEPA, 4 for I-JEPA) is expanded from the rows.
PANELS = (
    ("loss (baseline_loss: clip mean + position mean)", "loss", ("loss_*", "baseline_loss", "loss"),
     False),
    ("target feature std (collapse if -> 0)", "std over the batch, mean over features",
     ("target_std",), False),
    ("effective rank (dimensional collapse if it falls)", "effective rank of the features",
     ("target_rank", "context_rank"), False),
    ("grad norm", "global L2 norm (log scale)", ("grad_norm_encoder", "grad_norm_predictor"), True),
    ("schedules", "value / its maximum", ("lr", "wd", "momentum"), False),
    ("online eval top-1 % (train.eval_every)", "top-1 % (dashed: random init)",
     ("online/ridge_top1", "online/knn_top1", "online/linear_top1",
      "online/ridge_top1_random_init", "online/knn_top1_random_init",
      "online/linear_top1_random_init"), False),
)


def _expand(keys, rows):
    """`loss_*` -> loss_0, loss_1, ... as present in the rows (sorted by number)."""
    present = {k for r in rows for k in r}
    out = []
    for k in keys:
        if k == "loss_*":
            out += sorted((p for p in present if re.fullmatch(r"loss_\d+", p)),
                          key=lambda p: int(p[5:]))
        elif k in present:
            out.append(k)
    return out


def _style(key, colors):
    """Line style: the total loss last, thick and black so the per-generator lines (thin, light)
    cannot hide it; a random-init score dashed, in the colour of its pretrained score."""
    if key == "loss":
        return dict(color="black", linewidth=2.4, zorder=3)
    if re.fullmatch(r"loss_\d+", key):
        return dict(linewidth=1.0, alpha=0.55)
    if key == "baseline_loss":
        return dict(color="tab:gray", linestyle=":", linewidth=1.5)
    if key.endswith("_random_init"):
        return dict(color=colors.get(key[:-len("_random_init")]), linestyle="--", linewidth=1.2)
    return dict(linewidth=1.5)


def figure(rows):
    """The metrics figure of a list of metrics rows (logger.read), one panel per group of keys
    present in them."""
    panels = [(t, y, _expand(ks, rows), log_y) for t, y, ks, log_y in PANELS]
    panels = [p for p in panels if p[2]]
    if not panels:
        raise ValueError("no plottable metrics in the rows")
    cols = min(COLUMNS, len(panels))
    n_rows = -(-len(panels) // cols)
    fig = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * n_rows), dpi=DPI)
    axes = fig.subplots(n_rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_axis_off()  # the empty cells of the last row
    for ax, (title, ylabel, keys, log_y) in zip(axes, panels):
        colors = {}
        for k in keys:
            # Rows differ: online-eval rows carry only their own keys.
            steps = [r["step"] for r in rows if k in r]
            values = [r[k] for r in rows if k in r]
            label = k
            # lr/wd/momentum live on different scales: show each relative to its maximum.
            if title == "schedules":
                top = max(abs(v) for v in values) or 1.0
                values = [v / top for v in values]
                label = f"{k} / {top:.3g}"
            line, = ax.plot(steps, values, label=label, marker="o" if len(values) < 30 else None,
                            markersize=3, **_style(k, colors))
            colors[k] = line.get_color()
        if log_y:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot(workdir, out=None):
    """Write the metrics figure; returns its path."""
    rows = logger.read(workdir)
    if not rows:
        raise ValueError(f"{workdir}/metrics.jsonl has no rows yet")
    out = out or os.path.join(workdir, "metrics.png")
    figure(rows).savefig(out, dpi=DPI)
    return out
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    try:
        print(plot(args.workdir, args.out))
    except (OSError, ValueError) as e:
        sys.exit(f"vjepa_jax.plot: error: {e}")


if __name__ == "__main__":
    main()
