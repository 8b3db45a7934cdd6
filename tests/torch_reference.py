"""An independent PyTorch V-JEPA encoder and predictor, written from VJEPA_SPEC §1-§2 for parity tests.

Module and parameter names, registration order (hence named_parameters() order) and layouts
follow the spec's description of the official code: Conv3d tubelet embedding, a frozen sin-cos
`pos_embed` parameter, pre-norm blocks with a fused qkv Linear, SDPA, exact GELU, LayerNorm
eps 1e-6. Nothing here is imported from vjepa_jax.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def sincos_table(width, grid, uniform_power=True):
    """[N, width] float32: per token n = (t, h, w) in time-major order, [time | height | width] parts.

    Each part of even width u holds sin(pos * w_k) for k < u/2 then cos(pos * w_k), with
    w_k = 10000^(-k / (u/2)); uniform_power gives every part 2*ceil(width/6) columns and keeps
    the first `width` columns, otherwise time gets width/2 and height, width width/4 each.
    """
    t_n, h_n, w_n = grid
    n = torch.arange(t_n * h_n * w_n, dtype=torch.float64)
    coords = (torch.div(n, h_n * w_n, rounding_mode="floor"),
              torch.remainder(torch.div(n, w_n, rounding_mode="floor"), h_n),
              torch.remainder(n, w_n))
    parts = [2 * math.ceil(width / 6)] * 3 if uniform_power else [width // 2, width // 4, width // 4]
    columns = []
    for pos, u in zip(coords, parts):
        half = u // 2
        freq = torch.pow(torch.tensor(10000.0, dtype=torch.float64),
                         -torch.arange(half, dtype=torch.float64) / half)
        angle = pos[:, None] * freq[None, :]
        columns += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(columns, dim=1)[:, :width].float()


def gather(x, idx):
    """x [B, N, D], idx [B, K] -> [B, K, D]."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # scale 1/sqrt(head_dim)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed3D(nn.Module):
    def __init__(self, dim, tubelet, patch):
        super().__init__()
        self.proj = nn.Conv3d(3, dim, (tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x):  # [B, 3, T, H, W] -> [B, N, D], tokens time-major
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """Clips [B, 3, T, H, W] (+ kept indices [B, K]) -> tokens [B, N|K, D]."""

    def __init__(self, dim, depth, heads, hidden, num_frames, crop, patch, tubelet=2):
        super().__init__()
        self.patch_embed = PatchEmbed3D(dim, tubelet, patch)
        grid = (num_frames // tubelet, crop // patch, crop // patch)
        self.pos_embed = nn.Parameter(sincos_table(dim, grid)[None], requires_grad=False)
        self.blocks = nn.ModuleList([Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, video, keep=None):
        x = self.patch_embed(video) + self.pos_embed
        if keep is not None:
            x = gather(x, keep)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class Predictor(nn.Module):
    """Context [B, Kc, D] + indices [B, Kc], [B, Kt] -> predictions [B, Kt, D]."""

    def __init__(self, dim, pred_dim, depth, heads, grid, num_mask_tokens=2):
        super().__init__()
        self.predictor_embed = nn.Linear(dim, pred_dim)
        self.mask_tokens = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, 1, pred_dim)) for _ in range(num_mask_tokens)])
        self.predictor_pos_embed = nn.Parameter(sincos_table(pred_dim, grid)[None],
                                                requires_grad=False)
        self.predictor_blocks = nn.ModuleList(
            [Block(pred_dim, heads, 4 * pred_dim) for _ in range(depth)])
        self.predictor_norm = nn.LayerNorm(pred_dim, eps=1e-6)
        self.predictor_proj = nn.Linear(pred_dim, dim)

    def forward(self, z, ctx, tgt, mask_index):
        b = z.shape[0]
        pos = self.predictor_pos_embed.expand(b, -1, -1)
        x = self.predictor_embed(z) + gather(pos, ctx)
        token = self.mask_tokens[mask_index % len(self.mask_tokens)]
        queries = token.expand(b, tgt.shape[1], -1) + gather(pos, tgt)
        x = torch.cat([x, queries], dim=1)
        for blk in self.predictor_blocks:
            x = blk(x)
        return self.predictor_proj(self.predictor_norm(x)[:, z.shape[1]:])


class _Holder(nn.Module):
    def __init__(self, **children):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


def ddp_wrapped(model):
    """model inside `module.backbone.` (DDP around the MultiMaskWrapper) so names carry the prefix."""
    return _Holder(module=_Holder(backbone=model))


def official_param_groups(encoder, predictor):
    """The reference AdamW groups (VJEPA_SPEC §4.4) over two modules' named_parameters()."""
    def split(model, excluded):
        return [p for n, p in model.named_parameters()
                if (("bias" in n) or (p.ndim == 1)) == excluded]
    return [{"params": split(encoder, False)}, {"params": split(predictor, False)},
            {"params": split(encoder, True), "WD_exclude": True, "weight_decay": 0},
            {"params": split(predictor, True), "WD_exclude": True, "weight_decay": 0}]
