"""An independent PyTorch I-JEPA encoder and predictor, written from IJEPA_SPEC §1-§2 and §6.2.

Names and registration order follow the spec: the encoder registers `patch_embed` (a Conv2d
under `.proj`) and then its own frozen `pos_embed`; the predictor registers `predictor_embed`,
then its own `mask_token` and frozen `predictor_pos_embed`, then the blocks. Tables are 2-D
sin-cos with the FIRST half encoding the column index. Blocks are torch_reference.Block (the
same block as V-JEPA, §1.3). Nothing here is imported from vjepa_jax.
"""
import torch
from torch import nn

from torch_reference import Block


def sincos_2d(width, side):
    """[side*side, width] float32; token n = row * side + col -> [sin(c w), cos(c w), sin(r w), cos(r w)]."""
    n = torch.arange(side * side, dtype=torch.float64)
    row, col = torch.div(n, side, rounding_mode="floor"), torch.remainder(n, side)
    quarter = width // 4
    freq = 1.0 / torch.pow(torch.tensor(10000.0, dtype=torch.float64),
                           torch.arange(quarter, dtype=torch.float64) / quarter)
    c, r = col[:, None] * freq, row[:, None] * freq
    return torch.cat([torch.sin(c), torch.cos(c), torch.sin(r), torch.cos(r)], dim=1).float()


class PatchEmbed(nn.Module):
    def __init__(self, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):  # [B, 3, S, S] -> [B, N, D], raster order
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    def __init__(self, dim, depth, heads, hidden, crop, patch):
        super().__init__()
        self.patch_embed = PatchEmbed(dim, patch)
        self.pos_embed = nn.Parameter(sincos_2d(dim, crop // patch)[None], requires_grad=False)
        self.blocks = nn.ModuleList([Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, images, keep=None):  # images [B, 3, S, S]; keep [B, K] token indices
        x = self.patch_embed(images) + self.pos_embed
        if keep is not None:
            x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class Predictor(nn.Module):
    def __init__(self, dim, pred_dim, depth, heads, side):
        super().__init__()
        self.predictor_embed = nn.Linear(dim, pred_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim))
        self.predictor_pos_embed = nn.Parameter(sincos_2d(pred_dim, side)[None],
                                                requires_grad=False)
        self.predictor_blocks = nn.ModuleList([Block(pred_dim, heads, 4 * pred_dim)
                                               for _ in range(depth)])
        self.predictor_norm = nn.LayerNorm(pred_dim, eps=1e-6)
        self.predictor_proj = nn.Linear(pred_dim, dim)
