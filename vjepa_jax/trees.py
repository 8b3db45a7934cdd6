"""Parameter trees by path: flatten to {('blocks_0', 'qkv', 'kernel'): leaf}, back, and compare."""
import jax


def _key(k):
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def path_name(path):
    """'encoder/blocks_0/attn/qkv/bias' for a jax key path."""
    return "/".join(_key(k) for k in path)


def flatten(tree):
    """{path tuple of str: leaf} of a nested dict (or any pytree) of params."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(_key(k) for k in path): leaf for path, leaf in flat}


def unflatten(flat):
    """Inverse of flatten for nested dicts: {path tuple: leaf} -> {k0: {k1: ... leaf}}."""
    tree = {}
    for path, leaf in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return tree
