"""I-JEPA demo: a small image ViT on generated images (textured shapes), no download, CPU minutes.

    python -m vjepa_jax.train --config configs/pretrain/ijepa_demo.py --workdir runs/ijepa
    python -m vjepa_jax.online_eval --config configs/pretrain/ijepa_demo.py --workdir runs/ijepa

The reference recipe at toy scale: 4 target blocks and a context block on an 8x8 grid (counts
from the reference collator at 16 images per batch), smooth-L1 loss, no gradient clipping; only
the size, the step count (1000) and the EMA start (0.99, as the V-JEPA demo: over this few steps
0.996 would keep most of the random init in the target) differ. The readout is ridge regression
on all tokens of 4096 generated labelled images (4 shapes), scored on 4096 others, against a
random-init encoder; README has the measured numbers over 3 seeds and 3 splits. `:smoke` shrinks
it further for tests.
"""
from vjepa_jax.config import base_config


def get_config(arg=None):
    c = base_config("ijepa")
    c.seed = 0
    c.model.update(variant="tiny", depth=4, patch_size=8, crop_size=64, pred_width=96,
                   pred_depth=2, pred_num_heads=3, dtype="float32")
    c.mask_reference_batch = 16
    c.data.update(source="synthetic", batch_size=16, num_workers=0, synthetic_size=1024)
    c.optim.update(epochs=50, ipe=20, warmup=1, start_lr=1e-4, lr=3e-4, final_lr=1e-5,
                   ema=(0.99, 1.0))
    # 4096 + 4096 images: with 1024 the split-to-split spread (~1.5 points) hid the margin.
    c.online_eval.update(num_train=4096, num_val=4096, token_ridge=True)
    c.train.update(log_every=10, checkpoint_every=250, keep_checkpoints=2)
    if arg == "smoke":
        c.model.update(depth=2, crop_size=48, pred_depth=1)
        c.data.update(batch_size=8, synthetic_size=64)
        c.optim.update(epochs=2, ipe=3)
        c.train.update(log_every=1, checkpoint_every=3)
    elif arg:
        raise ValueError(f"unknown I-JEPA demo argument {arg!r}; use ':smoke' or nothing")
    return c
