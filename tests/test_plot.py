"""metrics.png (vjepa_jax/plot.py): a screen-shaped grid of labelled panels, the total loss on top."""
import json
import math

from PIL import Image

from vjepa_jax import logger, plot


def _write_metrics(workdir, steps=40, generators=4, eval_every=10):
    """A metrics.jsonl as train.py writes it: training rows (I-JEPA: loss_0..loss_3) and, every
    eval_every steps, online-eval rows carrying only their own keys."""
    rows = []
    for s in range(1, steps + 1):
        loss = 0.8 * math.exp(-s / 20) + 0.1
        row = {"step": s, "loss": loss, "baseline_loss": 0.3,
               **{f"loss_{i}": loss + 0.01 * (i - 1.5) for i in range(generators)},
               "target_std": 0.6, "target_rank": 8.0 - s / 10, "context_rank": 6.0,
               "grad_norm_encoder": 1e-3 * s, "grad_norm_predictor": 0.4,
               "lr": 3e-4 * min(1.0, s / 5), "wd": 0.04 + s / 100, "momentum": 0.99 + s / 4000}
        rows.append(row)
        if s % eval_every == 0:
            rows.append({"step": s, **{f"online/{k}{suffix}": 20.0 + s / 10
                                       for k in ("knn_top1", "linear_top1", "ridge_top1")
                                       for suffix in ("", "_random_init")}})
    with open(workdir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_plot_is_screen_shaped_with_labelled_panels_and_the_total_loss_on_top(tmp_path):
    _write_metrics(tmp_path)
    path = plot.plot(str(tmp_path))
    width, height = Image.open(path).size
    # The old layout was one row of panels: 2250 x 324 px for five of them.
    assert width <= 2000 and height >= 500, (width, height)
    assert 1.0 <= width / height <= 2.5, (width, height)

    fig = plot.figure(logger.read(str(tmp_path)))
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 6  # loss, std, rank, grad norm, schedules, online eval
    for ax in panels:
        assert ax.get_xlabel() == "step", ax.get_title()
        assert ax.get_ylabel(), ax.get_title()
    loss_ax = next(ax for ax in panels if ax.get_title().startswith("loss"))
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert {f"loss_{i}" for i in range(4)} <= set(lines)  # every generator, not just 0..2
    total = lines["loss"]
    # Drawn after (above) and thicker than every per-generator loss, so they cannot hide it.
    assert loss_ax.get_lines()[-1] is total
    for i in range(4):
        assert total.get_linewidth() > lines[f"loss_{i}"].get_linewidth()
    online_ax = next(ax for ax in panels if ax.get_title().startswith("online"))
    assert "online/ridge_top1" in {line.get_label() for line in online_ax.get_lines()}


def test_plot_of_a_run_without_online_eval_keeps_the_grid(tmp_path):
    """Five panels (no online eval): still a 2 x 3 grid, the empty cell hidden."""
    _write_metrics(tmp_path, generators=2, eval_every=10**6)
    fig = plot.figure(logger.read(str(tmp_path)))
    assert len([ax for ax in fig.axes if ax.axison]) == 5
    width, height = fig.get_size_inches() * fig.dpi
    assert 1.0 <= width / height <= 2.5
