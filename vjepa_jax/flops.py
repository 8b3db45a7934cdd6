"""Analytic model FLOPs of one V-JEPA train step (matmuls + attention), for MFU.

Counts multiply-adds as 2 FLOPs. Training costs 3x the forward (forward, and a backward that
computes grads for inputs and weights); the EMA target pass is forward only. LayerNorm,
softmax, GELU and the optimizer are not counted (they are memory-bound and small).
"""


def vit_forward(tokens, width, depth, mlp_hidden):
    """Forward FLOPs of `depth` pre-norm blocks on one sequence of `tokens` tokens."""
    matmul = 2 * tokens * (width * 3 * width + width * width + 2 * width * mlp_hidden)
    attn = 2 * 2 * tokens * tokens * width  # q.k^T and probs.v
    return depth * (matmul + attn)


def train_step(vjepa, batch_size):
    """Model FLOPs of one train step over a batch, from the shapes in a model.VJEPA bundle."""
    s = vjepa.encoder.shape
    p = vjepa.predictor
    patch = 2 * s.num_tokens * (3 * s.tubelet_size * s.patch_size ** 2) * s.width
    target = patch + vit_forward(s.num_tokens, s.width, s.depth, s.mlp_hidden)
    online = 0
    for g in vjepa.generators:
        kc, kt = g.num_context, g.num_target
        context = patch + vit_forward(kc, s.width, s.depth, s.mlp_hidden)
        predictor = (2 * kc * s.width * p.width + vit_forward(kc + kt, p.width, p.depth, 4 * p.width)
                     + 2 * kt * p.width * s.width)
        online += 3 * (context + predictor)
    return batch_size * (target + online)
