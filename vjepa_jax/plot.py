"""Plot loss curves and collapse signals from DIR/metrics.jsonl to DIR/metrics.png.

    python -m vjepa_jax.plot --workdir DIR
"""
import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vjepa_jax import logger  # noqa: E402

PANELS = (
    ("loss (baseline_loss: clip mean + position mean)",
     ("loss", "loss_0", "loss_1", "loss_2", "baseline_loss")),
    ("target feature std (collapse if -> 0)", ("target_std",)),
    ("effective rank (dimensional collapse if it falls)", ("target_rank", "context_rank")),
    ("grad norm", ("grad_norm_encoder", "grad_norm_predictor")),
    ("schedules", ("lr", "wd", "momentum")),
    ("online eval top-1 % (train.eval_every)", ("online/knn_top1", "online/linear_top1",
                                                "online/knn_top1_random_init",
                                                "online/linear_top1_random_init")),
)


def plot(workdir, out=None):
    """Write the metrics figure; returns its path."""
    rows = logger.read(workdir)
    if not rows:
        raise ValueError(f"{workdir}/metrics.jsonl has no rows yet")
    panels = [(t, ks) for t, ks in PANELS if any(k in r for r in rows for k in ks)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for k in keys:
            # Rows differ: online-eval rows carry only their own keys.
            steps = [r["step"] for r in rows if k in r]
            values = [r[k] for r in rows if k in r]
            if not values:
                continue
            # lr/wd/momentum live on different scales: show each relative to its maximum.
            if title == "schedules":
                top = max(abs(v) for v in values) or 1.0
                values = [v / top for v in values]
                k = f"{k} / {top:.3g}"
            ax.plot(steps, values, label=k, marker="o" if len(values) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = out or os.path.join(workdir, "metrics.png")
    fig.savefig(out, dpi=90)
    plt.close(fig)
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
