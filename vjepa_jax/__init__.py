"""V-JEPA in JAX/Flax: self-supervised video pretraining by feature prediction."""
