"""An independent PyTorch attentive probe written from VJEPA_SPEC §7.1 (V-JEPA 1), §9.2 (V-JEPA 2).

Module names and registration order follow the spec's description of the official
`AttentiveClassifier` (`pooler` = query_tokens, cross_attention_block, blocks; then `linear`),
so state_dict() gives the official key names. Every LayerNorm is torch's default (eps 1e-5).
V-JEPA 1: the cross-attention owns a `proj` Linear its forward never calls, and blocks (unused by
its evals) would act on the query after it; V-JEPA 2: no `proj`, and depth - 1 ordinary blocks run
on the encoder tokens before the cross-attention. Nothing here is imported from vjepa_jax.
"""
import collections

import torch
import torch.nn.functional as F
from torch import nn

from torch_reference import MLP, Attention


class CrossAttention(nn.Module):
    def __init__(self, dim, heads, with_proj):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, 2 * dim, bias=True)
        if with_proj:
            self.proj = nn.Linear(dim, dim)  # created, never used in forward (V-JEPA 1)

    def forward(self, q, x):
        b, n, d = q.shape
        h = self.heads
        q = self.q(q).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(x).reshape(b, x.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim)
        return y.transpose(1, 2).reshape(b, n, d)  # no output projection


class CrossAttentionBlock(nn.Module):
    def __init__(self, dim, heads, hidden, with_proj):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, heads, with_proj)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, q, x):
        q = q + self.xattn(q, self.norm1(x))  # only the tokens are normalised, not the query
        return q + self.mlp(self.norm2(q))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AttentivePooler(nn.Module):
    def __init__(self, dim, heads, depth, form, mlp_ratio=4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.form = form
        self.query_tokens = nn.Parameter(torch.zeros(1, 1, dim))
        self.cross_attention_block = CrossAttentionBlock(dim, heads, hidden, form == "vjepa")
        self.blocks = (nn.ModuleList([Block(dim, heads, hidden) for _ in range(depth - 1)])
                       if depth > 1 else None)

    def forward(self, x):
        if self.form == "vjepa2" and self.blocks is not None:
            for blk in self.blocks:
                x = blk(x)
        q = self.cross_attention_block(self.query_tokens.repeat(len(x), 1, 1), x)
        if self.form == "vjepa" and self.blocks is not None:
            for blk in self.blocks:
                q = blk(q)
        return q


class AttentiveClassifier(nn.Module):
    """Tokens [B, L, D] -> logits [B, C]."""

    def __init__(self, dim, heads, num_classes, depth=1, form="vjepa", mlp_ratio=4.0):
        super().__init__()
        self.pooler = AttentivePooler(dim, heads, depth, form, mlp_ratio)
        self.linear = nn.Linear(dim, num_classes, bias=True)

    def forward(self, x):
        return self.linear(self.pooler(x).squeeze(1))


def randomize(model, seed=0):
    """Every parameter drawn at random (LayerNorm scales near 1): every term of the forward counts.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.1 * noise if name.endswith("norm1.weight") or
                    name.endswith("norm2.weight") else 0.1 * noise)
    return model


def official_state_dict(model):
    """The state dict as DDP saves it: every key under `module.`."""
    return collections.OrderedDict(("module." + k, v) for k, v in model.state_dict().items())


def save_official(path, model, form):
    """The official probe checkpoint layout: V-JEPA 1 `classifier` (+ opt, scaler, epoch, batch
    size, world size, lr); V-JEPA 2 `classifiers` (a list, one per head) + the same metadata."""
    sd = official_state_dict(model)
    meta = {"opt": None, "scaler": None, "epoch": 20, "batch_size": 4, "world_size": 64}
    ckpt = {"classifier": sd, "lr": 1e-3, **meta} if form == "vjepa" else {"classifiers": [sd],
                                                                            **meta}
    torch.save(ckpt, path)
    return sd
