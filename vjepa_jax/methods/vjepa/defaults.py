"""V-JEPA's reference settings (VJEPA_SPEC §4.1, ViT-L/16 at 16x224): model, masks, optimizer."""
import ml_collections


def mask_config(num_blocks, spatial_scale, *, kind="multiblock"):
    """One mask generator; `num_context`/`num_target` 0 means derived from the reference stats."""
    return ml_collections.ConfigDict(dict(
        kind=kind,  # 'multiblock' | 'tube' | 'causal'
        num_blocks=num_blocks,
        spatial_scale=(spatial_scale, spatial_scale),
        temporal_scale=(1.0, 1.0),
        aspect_ratio=(0.75, 1.5),
        max_temporal_keep=1.0,
        tube_ratio=0.9,  # kind='tube': fraction of spatial positions hidden
        context_frames=1,  # kind='causal': context = first N time steps (tubelet units)
        num_context=0,
        num_target=0,
    ))


def model_defaults():
    """`config.model`: the ViT-L/16 encoder at 16x224 and the 12-block, 384-wide predictor."""
    return ml_collections.ConfigDict(dict(
        variant="large",  # tiny | small | base | large | huge | giant
        depth=0,  # 0: from the size table
        width=0,  # 0: from the size table
        num_heads=0,  # 0: from the size table
        patch_size=16,
        tubelet_size=2,
        num_frames=16,
        crop_size=224,
        uniform_power=True,
        pred_width=384,
        pred_depth=12,
        pred_num_heads=0,  # 0: the encoder's head count, as the reference does
        attention="auto",  # auto | xla | cudnn | splash (TPU, explicit only)
        dtype="bfloat16",  # compute dtype; params are always float32
        remat="none",  # none | full | dots (rematerialisation policy per block)
        scan_blocks=False,  # compile one block and loop over the depth (faster compiles)
        residual_dtype="float32",  # float32 | bfloat16 (the reference's autocast encoder stream)
        fuse_predictor=False,  # both generators' predictor passes as one padded call
    ))


def defaults(c):
    """Write V-JEPA's reference model, masks and optimizer settings into a base config."""
    c.model = model_defaults()
    c.masks = [mask_config(8, 0.15), mask_config(2, 0.7)]
    # Static token counts: 'random' keeps a random subset of an oversized context/target set,
    # 'first' keeps the lowest token indices like the reference's batch-min truncation.
    c.mask_truncation = "random"
    c.mask_count_multiple = 64  # round derived counts so attention lengths suit flash kernels
    c.mask_reference_batch = 24  # per-GPU batch whose batch-min statistics the counts follow
    c.optim = ml_collections.ConfigDict(dict(
        schedule="warmup_cosine",  # optim.SCHEDULES: 'warmup_cosine' | 'linear_decay'
        epochs=300,
        ipe=300,  # iterations per (virtual) epoch
        ipe_scale=1.25,  # schedules are laid out over ipe_scale * epochs * ipe steps
        warmup=40,  # epochs
        start_lr=2e-4,
        lr=6.25e-4,
        final_lr=1e-6,
        weight_decay=0.04,
        final_weight_decay=0.4,
        clip_grad=10.0,
        ema=(0.998, 1.0),
        betas=(0.9, 0.999),
        eps=1e-8,
        accum_steps=1,  # micro-batches per update (docs/SCALING.md, "Gradient accumulation")
    ))
