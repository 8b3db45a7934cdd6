"""Does a checkpoint match the model and the config? One check each, every difference named.

`check_agrees` compares described settings (a checkpoint's model or masks against a config's);
`check_shapes` / `check_tree_shapes` compare weights by name and shape (strict loading);
`check_finite` refuses weights holding NaN or Inf.
"""
import jax
import jax.numpy as jnp
import numpy as np

from vjepa_jax import trees


class CheckpointMismatch(ValueError):
    """A checkpoint describes a different model than the config: lists every differing setting."""


def check_agrees(saved, current, where, *, what="holds a checkpoint of a different model",
                 hint="Use a new --workdir, or a config matching the checkpoint."):
    """Raise CheckpointMismatch naming every key of `current` whose value `saved` does not share."""
    diffs = [f"  {k}: checkpoint {saved.get(k)!r} vs config {v!r}"
             for k, v in current.items() if saved.get(k) != v]
    if diffs:
        raise CheckpointMismatch(f"{where} {what}:\n" + "\n".join(diffs) + f"\n{hint}")


class StrictLoadError(ValueError):
    """Weights do not match the model: lists every missing, unexpected and misshaped key."""

    def __init__(self, where, missing=(), unexpected=(), wrong_shape=()):
        lines = [f"{where} does not match the model:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): " + ", ".join(unexpected))
        for name, got, want in wrong_shape:
            lines.append(f"  wrong shape: {name}: file {tuple(got)}, model {tuple(want)}")
        super().__init__("\n".join(lines))
        self.missing, self.unexpected = list(missing), list(unexpected)
        self.wrong_shape = list(wrong_shape)


def check_shapes(got, want, where):
    """Raise StrictLoadError unless {name: shape} `got` has exactly the names and shapes of `want`."""
    missing = [k for k in want if k not in got]
    unexpected = sorted(k for k in got if k not in want)
    wrong = [(k, tuple(got[k]), tuple(shape)) for k, shape in want.items()
             if k in got and tuple(got[k]) != tuple(shape)]
    if missing or unexpected or wrong:
        raise StrictLoadError(where, missing, unexpected, wrong)


def check_tree_shapes(params, abstract, where):
    """check_shapes of two param trees, keys named 'blocks_0/qkv/kernel'."""
    shapes = lambda tree: {"/".join(p): tuple(x.shape) for p, x in trees.flatten(tree).items()}
    check_shapes(shapes(params), shapes(abstract), where)


class NonFiniteWeights(ValueError):
    """A tree of weights holds NaN or Inf: names the tensors."""


def check_finite(tree, where, max_listed=8):
    """Raise NonFiniteWeights naming every leaf of `tree` (numpy or jax arrays) holding NaN/Inf.

    jax.Arrays are reduced on their devices (a global, sharded array never moves to one host);
    one device_get for all the flags.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    flags = jax.device_get([jnp.all(jnp.isfinite(x)) if isinstance(x, jax.Array)
                            else np.all(np.isfinite(np.asarray(x))) for _, x in flat])
    bad = [trees.path_name(path) for (path, _), ok in zip(flat, flags) if not ok]
    if bad:
        listed = ", ".join(bad[:max_listed]) + (f" and {len(bad) - max_listed} more"
                                                if len(bad) > max_listed else "")
        raise NonFiniteWeights(f"{where}: NaN or Inf in {len(bad)} of {len(flat)} tensors: "
                               f"{listed}")
