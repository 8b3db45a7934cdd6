"""V-JEPA 2 demo: a small RoPE ViT on generated videos, then a short cooldown at a larger clip.

    python -m vjepa_jax.train --config configs/pretrain/vjepa2_demo.py --workdir runs/vjepa2
    python -m vjepa_jax.train --config configs/pretrain/vjepa2_demo.py:cooldown \
        --config.train.init_from=runs/vjepa2 --workdir runs/vjepa2_cooldown

The V-JEPA 2 recipe at toy scale: 3-D RoPE (no position table), the 12-head-style predictor
with sorted tokens (here 3 heads of 32), V-JEPA 1's multiblock masks, a warmup to a constant LR,
constant weight decay and EMA, no clipping; then `:cooldown` restarts from the main run's
checkpoint at 16 frames instead of 8 (twice the tokens) with the LR decaying linearly. Only
the model size, clip sizes, batch, step counts and the EMA value (0.99 instead of 0.99925,
which would leave the target almost at its random init after 200 steps) differ from the
reference. `:smoke` and `:smoke_cooldown` (4 -> 8 frames, 32 -> 48 px) are the test sizes.
"""
from vjepa_jax.config import base_config


def get_config(arg=None):
    c = base_config("vjepa2")
    c.seed = 0
    c.model.update(variant="tiny", depth=4, num_frames=8, crop_size=64, patch_size=8,
                   pred_width=96, pred_depth=2, pred_num_heads=3, dtype="float32")
    c.mask_count_multiple = 8
    c.data.update(source="synthetic", batch_size=16, num_workers=0, synthetic_size=1024)
    c.optim.update(epochs=10, ipe=20, warmup=1, start_lr=1e-4, lr=3e-4, final_lr=3e-4,
                   ema=(0.99, 0.99))
    c.online_eval.update(num_train=1024, num_val=1024, token_ridge=True)
    c.train.update(log_every=5, checkpoint_every=50, keep_checkpoints=2)
    if arg in ("cooldown", "smoke_cooldown"):
        c.model.num_frames = 16
        c.optim.update(schedule="linear_decay", epochs=2, warmup=0, final_lr=1e-6)
    if arg in ("smoke", "smoke_cooldown"):
        c.model.update(depth=2, num_frames=4 if arg == "smoke" else 8,
                       crop_size=32 if arg == "smoke" else 48, pred_depth=1)
        c.data.update(batch_size=8, synthetic_size=64)
        c.optim.update(epochs=2, ipe=3)
        c.train.update(log_every=1, checkpoint_every=3)
    elif arg not in (None, "", "cooldown"):
        raise ValueError(f"unknown vjepa2_demo config argument {arg!r}; use ':cooldown', "
                         "':smoke', ':smoke_cooldown' or nothing")
    return c
