"""Frozen-encoder tokens computed once and kept on the host, for probing small datasets fast.

With `probe.cache_features` the eval encodes every train and validation example a single time,
with the validation transform (centre crop, `data.num_segments` x `data.num_views`, no
augmentation), and then trains the probe on the stored tokens: an epoch costs probe steps only,
so a small dataset can be probed to convergence in minutes on a CPU. Memory: examples x views x
tokens x width x bytes of `probe.feature_dtype` (the demo: 1280 x 256 x 192 x 2 B = 120 MiB);
the eval logs the size. One process only: the cache is not split over hosts.
"""
import logging

import jax
import numpy as np
import tqdm

log = logging.getLogger(__name__)


def encode_split(encode_fn, encoder_params, batches, to_global, name, total=None):
    """{'tokens' [examples, views, tokens, D], 'label' [examples]} of every valid example of a
    one-pass dataset of local batches (padding, valid=0, dropped)."""
    tokens, labels = [], []
    for local in tqdm.tqdm(batches, desc=f"encoding {name}", unit="batch", total=total,
                           dynamic_ncols=True, mininterval=2.0):
        valid = np.asarray(local["valid"]).astype(bool)
        out = np.asarray(jax.device_get(encode_fn(encoder_params, to_global(local))))
        tokens.append(out[valid])
        labels.append(np.asarray(local["label"])[valid])
    if sum(len(x) for x in labels) == 0:
        raise ValueError(f"the {name} has no examples to encode")
    cache = {"tokens": np.concatenate(tokens), "label": np.concatenate(labels)}
    log.info("cached %s features: %d examples, %s %s, %.1f MiB", name, len(cache["label"]),
             cache["tokens"].shape[1:], cache["tokens"].dtype, cache["tokens"].nbytes / 2**20)
    return cache


class TrainBatches:
    """Shuffled batches of a cache; batch k depends only on (seed, k), so a resume is exact.

    The examples are cut into passes of len // batch_size batches, each pass a fresh permutation
    (the remainder of a pass is left out, as a drop-remainder loader would).
    """

    def __init__(self, cache, batch_size, seed, start=0):
        if len(cache["label"]) < batch_size:
            raise ValueError(f"{len(cache['label'])} cached training examples are fewer than one "
                             f"batch (data.batch_size={batch_size})")
        self.cache, self.batch_size, self.seed, self.step = cache, batch_size, seed, start
        self.per_pass = len(cache["label"]) // batch_size

    def __iter__(self):
        return self

    def __next__(self):
        k, bs = self.step, self.batch_size
        order = np.random.default_rng([self.seed, k // self.per_pass]).permutation(
            len(self.cache["label"]))
        idx = np.sort(order[(k % self.per_pass) * bs:(k % self.per_pass + 1) * bs])
        self.step += 1
        return {"tokens": self.cache["tokens"][idx], "label": self.cache["label"][idx]}


class ValBatches:
    """The cache in order, in batches of batch_size, the last one padded with valid=0; iterable
    any number of times (once per validation)."""

    def __init__(self, cache, batch_size):
        self.cache, self.batch_size = cache, batch_size

    def __iter__(self):
        n = len(self.cache["label"])
        for start in range(0, n, self.batch_size):
            idx = np.arange(start, start + self.batch_size)
            valid = idx < n
            idx = np.minimum(idx, n - 1)
            yield {"tokens": self.cache["tokens"][idx], "label": self.cache["label"][idx],
                   "valid": valid.astype(np.int32)}
