"""V-JEPA 2's reference settings (VJEPA_SPEC §9.2-9.3, ViT-L/16 pretrain-256px-16f).

What differs from V-JEPA 1 (methods/vjepa/defaults.py): 3-D RoPE instead of the sin-cos table,
256 px crops, a 12-head predictor whose tokens are sorted by position, the init's depth rescale
kept, and the recipe: linear warmup to a constant LR (the cosine of V-JEPA 1 with final_lr = lr),
constant weight decay, constant EMA 0.99925, no gradient clipping. The masks are V-JEPA 1's.
"""
import ml_collections

from vjepa_jax.methods.vjepa import defaults as vjepa_defaults


def model_defaults():
    """`config.model`: the ViT-L/16 encoder at 16x256 with RoPE and the 12-head predictor."""
    m = vjepa_defaults.model_defaults()
    m.update(crop_size=256, pred_num_heads=12)
    m.rope = "tiled"  # 'tiled': the reference's frequency layout | 'interleaved': V-JEPA 2.1's
    m.pred_sort_tokens = True  # sort predictor tokens by index, as the reference (same output)
    m.rescale_init = True  # proj / fc2 init std 0.02 / sqrt(2 * layer), not undone as in V-JEPA 1
    m.pred_num_mask_tokens = 6  # len(masks) x 3 datasets, as the released predictors hold
    m.pred_mask_token = "group"  # 'group': token 0 for every generator (reference) | 'generator'
    return m


def defaults(c):
    """Write V-JEPA 2's reference model, masks, optimizer and frame-rate settings into a base config."""
    vjepa_defaults.defaults(c)
    c.model = model_defaults()
    c.data.fps = 4  # frames at 4 fps: frame step ceil(video fps) // 4 per video
    c.optim = ml_collections.ConfigDict(dict(
        schedule="warmup_cosine",  # with final_lr = lr: linear warmup, then constant
        epochs=800,  # the ViT-g config's 240K steps (see configs/pretrain/vjepa2_vitl_256px_16f.py)
        ipe=300,
        ipe_scale=1.25,
        warmup=40,
        start_lr=1e-4,
        lr=5.25e-4,
        final_lr=5.25e-4,
        weight_decay=0.04,
        final_weight_decay=0.04,
        clip_grad=0.0,  # no clipping
        ema=(0.99925, 0.99925),
        betas=(0.9, 0.999),
        eps=1e-8,
        accum_steps=1,  # micro-batches per update (docs/SCALING.md, "Gradient accumulation")
    ))


DATA_WEIGHTS = (0.335, 0.100, 0.565)  # K710, SSv2, HowTo100M (the order of data.index)
GLOBAL_BATCH = 3072
COOLDOWN_EPOCHS = 40  # assumed: 40 x 300 = 12K steps (the spec does not record the count)


def pretrain(c, variant):
    """The pretrain phase (pretrain-256px-16f): 16 x 256 clips, 24 per GPU x 128 = 3072."""
    c.model.variant = variant
    c.data.update(batch_size=GLOBAL_BATCH, weights=DATA_WEIGHTS)


def cooldown(c, variant, num_frames, crop_size, per_device_batch):
    """The cooldown ("progressive resolution", §9.3): longer / larger clips, the LR falling
    linearly from 5.25e-4 toward 1e-6 over ipe_scale x epochs x ipe steps, started from the
    pretrain phase's checkpoint (train.init_from). per_device_batch: the reference's per-GPU
    batch, which the mask counts follow (mask_reference_batch)."""
    pretrain(c, variant)
    c.model.update(num_frames=num_frames, crop_size=crop_size)
    c.mask_reference_batch = per_device_batch
    c.optim.update(schedule="linear_decay", epochs=COOLDOWN_EPOCHS, warmup=0, start_lr=5.25e-4,
                   final_lr=1e-6)
