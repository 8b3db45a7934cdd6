"""I-JEPA's reference settings (IJEPA_SPEC §3.6, §4.1: in1k_vith14_ep300): model, masks, optim, data."""
import ml_collections


def model_defaults():
    """`config.model`: ViT-H/14 at 224 on single images, the 12-block, 384-wide predictor."""
    return ml_collections.ConfigDict(dict(
        variant="huge",  # tiny | small | base | large | huge | giant (models/vit.py: SIZES)
        depth=0,  # 0: from the size table
        width=0,
        num_heads=0,
        patch_size=14,
        crop_size=224,
        num_frames=1,  # images: one frame, no tubelet
        tubelet_size=1,
        pred_width=384,
        pred_depth=12,
        pred_num_heads=0,  # 0: the encoder's head count, as the reference does
        attention="auto",  # auto | xla | cudnn | splash (TPU, explicit only)
        dtype="bfloat16",
        remat="none",
        scan_blocks=False,
    ))


def defaults(c):
    """Write I-JEPA's reference model, masks, optimizer and data settings into a base config."""
    c.model = model_defaults()
    c.masks = ml_collections.ConfigDict(dict(
        num_blocks=4,  # target blocks per image
        target_scale=(0.15, 0.2),
        aspect_ratio=(0.75, 1.5),
        context_scale=(0.85, 1.0),
        num_target=0,  # tokens per target block; 0: the reference's mean (44 at 224/14)
        num_context=0,  # 0: the reference's mean after batch-min truncation (68 at B = 128)
    ))
    c.mask_truncation = "random"  # 'first': keep the lowest indices, as the reference
    c.mask_reference_batch = 128  # per-GPU batch whose batch-min context size the count follows
    c.optim = ml_collections.ConfigDict(dict(
        schedule="warmup_cosine",  # optim.SCHEDULES: 'warmup_cosine' | 'linear_decay'
        epochs=300,
        ipe=625,  # a real epoch: 1,281,167 images // 2048
        ipe_scale=1.0,
        warmup=40,
        start_lr=2e-4,
        lr=1e-3,
        final_lr=1e-6,
        weight_decay=0.04,
        final_weight_decay=0.4,
        clip_grad=0.0,  # no clipping
        ema=(0.996, 1.0),
        betas=(0.9, 0.999),
        eps=1e-8,
        accum_steps=1,  # micro-batches per update (docs/SCALING.md, "Gradient accumulation")
    ))
    c.data.update(source="imagefolder", batch_size=2048, random_resize_scale=(0.3, 1.0),
                  random_resize_aspect_ratio=(3 / 4, 4 / 3), hflip=False)
