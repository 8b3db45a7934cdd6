"""Analytic FLOPs of transformer blocks, from which each method counts its train step (for MFU).

Counts multiply-adds as 2 FLOPs. Training costs 3x the forward (forward, and a backward that
computes grads for inputs and weights); the EMA target pass is forward only. LayerNorm,
softmax, GELU and the optimizer are not counted (they are memory-bound and small).
"""


def vit_forward(tokens, width, depth, mlp_hidden):
    """Forward FLOPs of `depth` pre-norm blocks on one sequence of `tokens` tokens."""
    matmul = 2 * tokens * (width * 3 * width + width * width + 2 * width * mlp_hidden)
    attn = 2 * 2 * tokens * tokens * width  # q.k^T and probs.v
    return depth * (matmul + attn)
