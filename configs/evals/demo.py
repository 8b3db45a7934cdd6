"""Demo eval: attentive probe on generated labelled videos (16 classes: shape x direction), CPU.

    python -m vjepa_jax.train --config configs/pretrain/demo.py --workdir /tmp/vjepa_demo
    python -m vjepa_jax.eval --config configs/evals/demo.py --workdir /tmp/vjepa_demo_eval
    python -m vjepa_jax.eval --config configs/evals/demo.py --workdir /tmp/vjepa_demo_eval_random \
        --config.pretrained=''

The first command pretrains the tiny encoder (configs/pretrain/demo.py), the second probes it, the
third probes the same architecture with random weights: the baseline. Expected on a 2-core CPU:
see docs/EVAL.md for the measured top-1 of both and the time (minutes each).
Then the probe's final validation number again, and the classifier on a video of your own:

    python -m vjepa_jax.eval --config configs/evals/demo.py --config.eval.val_only=True \
        --config.probe.checkpoint=/tmp/vjepa_demo_eval
    python -m vjepa_jax.classify --probe /tmp/vjepa_demo_eval VIDEO.mp4

`:smoke` matches `configs/pretrain/demo.py:smoke` and runs in seconds (tests).
"""
from vjepa_jax.evaluation.configs import base_eval_config


def get_config(arg=None):
    c = base_eval_config()
    c.pretrained = "/tmp/vjepa_demo"
    # The encoder of configs/pretrain/demo.py.
    c.model.update(variant="tiny", depth=4, num_frames=8, crop_size=64, patch_size=8,
                   dtype="float32", attention="xla")
    # Both splits are encoded once and the probe trains on the stored tokens (docs/EVAL.md,
    # "Cached features"): 50 epochs then cost about as much as 2 epochs on clips. With
    # --config.probe.cache_features=False the probe sees mild crops instead (a 0.08-scale crop
    # would often cut the object out).
    c.data.update(source="synthetic", num_classes=16, synthetic_train_size=1024,
                  synthetic_val_size=256, num_segments=1, num_views=1, train_scale=(0.8, 1.0),
                  train_ratio=(0.9, 1.1), batch_size=64, num_workers=0)
    # Positions added to the tokens (not in the reference probe, docs/EVAL.md "The probe"): the
    # demo's target drops the position table, as its predictor adds it back, and the label
    # (shape x direction) is a question of where things are.
    c.probe.update(dtype="float32", cache_features=True, pos_embed=True)
    c.optim.update(epochs=50, lr=1e-3, start_lr=1e-3, weight_decay=0.01)
    c.eval.update(log_every=16)
    if arg == "smoke":
        c.pretrained = ""
        c.model.update(depth=2, num_frames=4, crop_size=32)
        c.data.update(synthetic_train_size=32, synthetic_val_size=16, batch_size=8)
        c.optim.update(epochs=2)
        c.eval.update(log_every=1)
    elif arg:
        raise ValueError(f"unknown demo eval argument {arg!r}; use ':smoke' or nothing")
    return c
