"""An independent PyTorch V-JEPA 2 encoder and predictor, written from VJEPA_SPEC §9.2 for parity tests.

Everything V-JEPA 2 keeps from V-JEPA 1 (the tubelet conv, the MLP, pre-norm blocks, LayerNorm
eps 1e-6, the `module.backbone.` wrapping) is taken from torch_reference.py; what differs is
written here: no `pos_embed` / `predictor_pos_embed` parameter, attention that rotates queries
and keys by each token's (t, h, w) position before SDPA, and a predictor that sorts its tokens
by token index before the blocks and restores the order after. `layout` picks the angle vector
of a rotated part: 'tiled' (the reference) or 'interleaved' (V-JEPA 2.1). Nothing here is
imported from vjepa_jax.
"""
import torch
import torch.nn.functional as F
from torch import nn

from torch_reference import MLP, PatchEmbed3D, ddp_wrapped, gather  # noqa: F401 - re-exported


def positions_of(ids, grid):
    """Flat token indices [B, L] of a (T, H, W) grid -> float (t, h, w), each [B, L]."""
    _, h, w = grid
    t = torch.div(ids, h * w, rounding_mode="floor")
    rest = ids - t * h * w
    row = torch.div(rest, w, rounding_mode="floor")
    return t.double(), row.double(), (rest - row * w).double()


def rotate(x, pos, layout):
    """x [B, heads, L, d] turned by positions pos [B, L]: pairs (x0, x1), (x2, x3), ... ."""
    d = x.shape[-1]
    half = d // 2
    omega = 1.0 / torch.pow(torch.tensor(10000.0, dtype=torch.float64),
                            torch.arange(half, dtype=torch.float64) / half)
    angle = pos[:, None, :, None] * omega  # [B, 1, L, d/2]
    if layout == "tiled":
        angle = torch.cat([angle, angle], dim=-1)
    elif layout == "interleaved":
        angle = torch.repeat_interleave(angle, 2, dim=-1)
    else:
        raise ValueError(f"unknown RoPE layout {layout!r}")
    pairs = x.unflatten(-1, (half, 2))
    partner = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * angle.cos().to(x.dtype) + partner * angle.sin().to(x.dtype)


class RoPEAttention(nn.Module):
    def __init__(self, dim, heads, layout):
        super().__init__()
        self.heads, self.layout = heads, layout
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, ids, grid):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        part = 2 * ((q.shape[-1] // 3) // 2)  # per axis; the rest of the head is not rotated
        rotated_q, rotated_k = [], []
        for axis, pos in enumerate(positions_of(ids, grid)):
            cut = slice(axis * part, (axis + 1) * part)
            rotated_q.append(rotate(q[..., cut], pos, self.layout))
            rotated_k.append(rotate(k[..., cut], pos, self.layout))
        q = torch.cat(rotated_q + [q[..., 3 * part:]], dim=-1)
        k = torch.cat(rotated_k + [k[..., 3 * part:]], dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, layout):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RoPEAttention(dim, heads, layout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, hidden)

    def forward(self, x, ids, grid):
        x = x + self.attn(self.norm1(x), ids, grid)
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Clips [B, 3, T, H, W] (+ kept indices [B, K]) -> tokens [B, N|K, D]; no position table."""

    def __init__(self, dim, depth, heads, hidden, patch, tubelet=2, layout="tiled"):
        super().__init__()
        self.patch_embed = PatchEmbed3D(dim, tubelet, patch)
        self.blocks = nn.ModuleList([Block(dim, heads, hidden, layout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.tubelet, self.patch = tubelet, patch

    def forward(self, video, keep=None):
        _, _, t, h, w = video.shape
        grid = (t // self.tubelet, h // self.patch, w // self.patch)
        x = self.patch_embed(video)
        ids = torch.arange(x.shape[1])[None].expand(x.shape[0], -1) if keep is None else keep
        if keep is not None:
            x = gather(x, keep)
        for blk in self.blocks:
            x = blk(x, ids, grid)
        return self.norm(x)


class Predictor(nn.Module):
    """Context [B, Kc, D] + indices [B, Kc], [B, Kt] -> predictions [B, Kt, D]."""

    def __init__(self, dim, pred_dim, depth, heads, grid, num_mask_tokens, layout="tiled"):
        super().__init__()
        self.grid = grid
        self.predictor_embed = nn.Linear(dim, pred_dim)
        self.mask_tokens = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, 1, pred_dim)) for _ in range(num_mask_tokens)])
        self.predictor_blocks = nn.ModuleList(
            [Block(pred_dim, heads, 4 * pred_dim, layout) for _ in range(depth)])
        self.predictor_norm = nn.LayerNorm(pred_dim, eps=1e-6)
        self.predictor_proj = nn.Linear(pred_dim, dim)

    def forward(self, z, ctx, tgt, mask_index):
        b = z.shape[0]
        token = self.mask_tokens[mask_index % len(self.mask_tokens)]
        x = torch.cat([self.predictor_embed(z), token.expand(b, tgt.shape[1], -1)], dim=1)
        ids = torch.cat([ctx, tgt], dim=1)
        order = torch.argsort(ids, dim=1)  # by token index, before the blocks
        x, ids = gather(x, order), torch.gather(ids, 1, order)
        for blk in self.predictor_blocks:
            x = blk(x, ids, self.grid)
        x = gather(x, torch.argsort(order, dim=1))  # back to [context | targets]
        return self.predictor_proj(self.predictor_norm(x)[:, z.shape[1]:])
