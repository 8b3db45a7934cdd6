"""Official attentive-probe checkpoints (VJEPA_SPEC §7.1, §9.2) <-> this project's probe."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference_probe as ref  # noqa: E402
from vjepa_jax import mismatch  # noqa: E402
from vjepa_jax.classifier import load_probe  # noqa: E402
from vjepa_jax.interop import probe as probe_interop  # noqa: E402
from vjepa_jax.models import probe as probe_lib  # noqa: E402

D, HEADS, CLASSES = 32, 4, 7
FORMS = [("vjepa", 1), ("vjepa2", 4)]  # V-JEPA 1's probe; V-JEPA 2's with 3 blocks + cross-attn


def torch_probe(form, depth, seed=0):
    return ref.randomize(ref.AttentiveClassifier(D, HEADS, CLASSES, depth, form), seed)


def tokens(length=10, seed=1):
    return np.random.default_rng(seed).normal(size=(3, length, D)).astype(np.float32)


def abstract(form, num_blocks):
    module = probe_lib.AttentiveClassifier(CLASSES, HEADS, dtype=jnp.float32, form=form,
                                           num_blocks=num_blocks)
    return module, jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1, D)))["params"]


@pytest.mark.parametrize("form,depth", FORMS)
def test_official_probe_imports_strictly_and_gives_the_reference_logits(tmp_path, form, depth):
    model = torch_probe(form, depth)
    path = tmp_path / "probe.pth.tar"
    ref.save_official(path, model, form)
    probe = load_probe(path, HEADS)
    assert (probe.form, probe.module.num_blocks, probe.num_classes) == (form, depth, CLASSES)
    x = tokens()
    ours = np.asarray(jax.jit(probe.module.apply)({"params": probe.params}, x))
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)
    # V-JEPA 1's dead projection is kept for export, V-JEPA 2 has none.
    assert sorted(probe.unused) == (sorted(probe_interop.UNUSED_PROJ) if form == "vjepa" else [])


@pytest.mark.parametrize("form,depth", FORMS)
def test_export_then_import_is_bit_exact_and_loads_strictly_in_torch(tmp_path, form, depth):
    # An official file -> import -> export: the same tensors, the unused proj included.
    model = torch_probe(form, depth, seed=2)
    original = ref.save_official(tmp_path / "official.pth.tar", model, form)
    probe = load_probe(tmp_path / "official.pth.tar", HEADS)
    again = probe_interop.write_file(tmp_path / "again.pth.tar", probe.params, form, probe.unused)
    assert list(again) == list(original)
    for key, value in original.items():
        assert torch.equal(again[key], value), key
    # Our params -> export -> import: bit-exact, and the file loads strictly into the torch probe.
    _, shapes = abstract(form, depth)
    rng = np.random.default_rng(3)
    params = jax.tree_util.tree_map_with_path(  # LayerNorm scales near 1, the rest near 0
        lambda p, s: ((p[-1].key == "scale") + 0.1 * rng.normal(size=s.shape)).astype(np.float32),
        shapes)
    probe_interop.write_file(tmp_path / "ours.pth.tar", params, form)
    back = load_probe(tmp_path / "ours.pth.tar", HEADS)
    jax.tree.map(np.testing.assert_array_equal, back.params, params)
    ckpt = torch.load(tmp_path / "ours.pth.tar", weights_only=True)
    sd = ckpt["classifier"] if form == "vjepa" else ckpt["classifiers"][0]
    fresh = ref.AttentiveClassifier(D, HEADS, CLASSES, depth, form)
    fresh.load_state_dict({k[len("module."):]: v for k, v in sd.items()}, strict=True)
    x = tokens(seed=4)
    with torch.no_grad():
        want = fresh(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(back.module.apply({"params": back.params}, x)), want,
                               rtol=1e-5, atol=1e-5)


def _strict_error(sd, form, depth):
    _, shapes = abstract(form, depth)
    with pytest.raises(mismatch.StrictLoadError) as err:
        probe_interop.from_torch(sd, shapes, form, "probe.pth.tar")
    return str(err.value)


@pytest.mark.parametrize("form,depth", FORMS)
def test_missing_unexpected_and_misshapen_keys_are_named(form, depth):
    sd = dict(ref.official_state_dict(torch_probe(form, depth)))
    missing = dict(sd)
    del missing["module.linear.bias"]
    assert "missing (1): linear.bias" in _strict_error(missing, form, depth)
    extra = dict(sd, **{"module.pooler.cross_attention_block.extra.weight": torch.zeros(3)})
    assert ("unexpected (1): pooler.cross_attention_block.extra.weight"
            in _strict_error(extra, form, depth))
    wrong = dict(sd, **{"module.pooler.cross_attention_block.xattn.kv.weight": torch.zeros(D, D)})
    assert (f"wrong shape: pooler.cross_attention_block.xattn.kv.weight: file ({D}, {D}), "
            f"model ({2 * D}, {D})" in _strict_error(wrong, form, depth))
    if form == "vjepa":  # the dead projection is part of V-JEPA 1's layout
        no_proj = {k: v for k, v in sd.items() if "xattn.proj" not in k}
        assert "missing (2): pooler.cross_attention_block.xattn.proj" in _strict_error(
            no_proj, form, depth)
    else:  # a block's key
        no_block = {k: v for k, v in sd.items() if k != "module.pooler.blocks.2.attn.qkv.bias"}
        assert "missing (1): pooler.blocks.2.attn.qkv.bias" in _strict_error(no_block, form, depth)


def test_the_form_and_size_are_read_from_the_keys(tmp_path):
    v1 = probe_interop.describe(ref.official_state_dict(torch_probe("vjepa", 1)), "a")
    v2 = probe_interop.describe(ref.official_state_dict(torch_probe("vjepa2", 4)), "b")
    assert v1 == {"form": "vjepa", "num_blocks": 1, "width": D, "num_classes": CLASSES,
                  "mlp_ratio": 4.0}
    assert v2 == dict(v1, form="vjepa2", num_blocks=4)
    # V-JEPA 1 with blocks after the cross-attention is not a probe this project builds.
    with pytest.raises(ValueError, match="V-JEPA 1 probe with 1 blocks after"):
        probe_interop.describe(ref.official_state_dict(torch_probe("vjepa", 2)), "c")
    # Neither a classifier nor a state dict of one: named.
    torch.save({"encoder": {}}, tmp_path / "enc.pth.tar")
    with pytest.raises(ValueError, match="not a probe checkpoint.*'encoder'"):
        load_probe(tmp_path / "enc.pth.tar", HEADS)
    # A V-JEPA 2 file's sweep of heads: pick one.
    sd = ref.official_state_dict(torch_probe("vjepa2", 2))
    torch.save({"classifiers": [sd, sd]}, tmp_path / "sweep.pth.tar")
    assert load_probe(tmp_path / "sweep.pth.tar", HEADS, head=1).module.num_blocks == 2
    with pytest.raises(ValueError, match="holds 2 probes.*head=2"):
        load_probe(tmp_path / "sweep.pth.tar", HEADS, head=2)
