"""Cached frozen features for the probe: encoded once, batched reproducibly, padded for validation."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import load_config
from vjepa_jax import sharding
from vjepa_jax.evaluation import data as eval_data, feature_cache, probe_steps
from vjepa_jax.models import probe as probe_lib, vit


def _cache(n, views=1, tokens=4, width=3):
    rng = np.random.default_rng(0)
    return {"tokens": rng.normal(size=(n, views, tokens, width)).astype(np.float32),
            "label": np.arange(n, dtype=np.int32)}


def test_train_batches_visit_every_example_once_per_pass_and_resume_exactly():
    cache = _cache(10)  # 3 batches of 3 per pass, one example left out per pass
    batches = feature_cache.TrainBatches(cache, 3, seed=7)
    seen = [next(batches)["label"] for _ in range(6)]
    for p in range(2):
        labels = np.concatenate(seen[3 * p:3 * p + 3])
        assert len(set(labels)) == 9  # no repeats inside a pass
    assert not all(np.array_equal(a, b) for a, b in zip(seen[:3], seen[3:]))  # reshuffled
    resumed = feature_cache.TrainBatches(cache, 3, seed=7, start=4)
    for k in (4, 5):
        got = next(resumed)
        np.testing.assert_array_equal(got["label"], seen[k])
        np.testing.assert_array_equal(got["tokens"], cache["tokens"][got["label"]])


def test_val_batches_cover_the_split_once_with_padding_marked():
    cache = _cache(7)
    batches = list(feature_cache.ValBatches(cache, 3))
    assert [len(b["label"]) for b in batches] == [3, 3, 3]
    valid = np.concatenate([b["valid"] for b in batches]).astype(bool)
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels[valid], np.arange(7))
    assert valid.sum() == 7
    assert len(list(feature_cache.ValBatches(cache, 3))) == 3  # iterable again


def test_encoded_split_equals_the_encoder_on_each_clip():
    c = load_config("configs/evals/demo.py", "smoke")
    c.model.update(depth=1)
    c.data.update(synthetic_val_size=11, batch_size=8)  # 8 fake devices
    encoder = vit.encoder_from_config(c.model)
    example = jnp.zeros((1, 4, 32, 32, 3), jnp.float32)
    params = encoder.init(jax.random.key(0), example)["params"]
    mesh = sharding.make_mesh(c.mesh)
    to_global = functools.partial(probe_steps.to_global, batch_sharding=sharding.batch_sharding(mesh))
    encode = jax.jit(lambda p, b: probe_steps.batch_tokens(encoder, p, b, c.probe))
    source = eval_data.make_source(c, train=False)
    ds = eval_data.make_val_dataset(c, source)
    cache = feature_cache.encode_split(encode, params, ds, to_global, "validation split")
    assert cache["tokens"].shape[0] == 11 and cache["tokens"].dtype == jnp.bfloat16
    videos = np.concatenate([b["video"][np.asarray(b["valid"]).astype(bool)] for b in ds])
    labels = np.concatenate([b["label"][np.asarray(b["valid"]).astype(bool)] for b in ds])
    want = probe_lib.frozen_features(encoder, params, jnp.asarray(videos))
    np.testing.assert_array_equal(cache["label"], labels)
    np.testing.assert_allclose(np.asarray(cache["tokens"], np.float32),
                               np.asarray(want, np.float32), rtol=2e-2, atol=2e-2)


def test_an_empty_split_is_named():
    with pytest.raises(ValueError, match="validation split has no examples"):
        feature_cache.encode_split(None, None, [], None, "validation split")
    with pytest.raises(ValueError, match="fewer than one batch"):
        feature_cache.TrainBatches(_cache(3), 4, seed=0)
