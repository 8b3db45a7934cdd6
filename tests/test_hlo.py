"""HLO audit of the V-JEPA train step (docs/PERFORMANCE.md, "HLO audit").

What the compiled step must look like, checked on the XLA text of a tiny bf16 model: no dense
token-by-token mask or bias, the context / target selections as gathers (not one-hot
matmuls), one attention softmax per pass and block (1 target + G context encoder passes, G
predictor passes, or 1 with model.fuse_predictor), XLA's FLOP count close to flops.py's, and
bf16 matmuls. Run as a program it prints the same audit at ViT-L width (2 + 2 blocks, the real
16x224 token counts), the numbers docs/PERFORMANCE.md records:

    JAX_PLATFORMS=cpu python tests/test_hlo.py --depth 2 --batch 2
"""
import argparse
import collections
import os
import re
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

from vjepa_jax import config as config_lib, methods, sharding, train_state, train_step  # noqa: E402

Instruction = collections.namedtuple("Instruction", "computation fused name op dtype dims "
                                                    "operands text")
_TYPE = re.compile(r"(pred|[sfu]\d+|bf16)\[([0-9,]*)\]")
_DEF = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*)$")


def parse_hlo(text):
    """Compiled HLO text -> [Instruction]; `fused` marks instructions inside fusion bodies
    (never materialised in memory), operands are the dims of each operand."""
    raw, computation = [], None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            computation = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            continue
        m = _DEF.match(line)
        if computation and m:
            name, rtype, op, rest = m.groups()
            depth, end = 1, 0
            while end < len(rest) and depth:  # the operand list ends at its closing parenthesis
                depth += {"(": 1, ")": -1}.get(rest[end], 0)
                end += 1
            types = _TYPE.findall(rtype)
            dtype, dims = types[0] if len(types) == 1 else ("tuple", "")
            raw.append((computation, name, op, dtype, tuple(int(d) for d in dims.split(",") if d),
                        re.findall(r"%([\w.\-]+)", rest[:end]), line))
    fused = {c for *_, op, _, _, _, line in raw if op == "fusion"
             for c in re.findall(r"calls=%([\w.\-]+)", line)}
    shapes = {name: dims for _, name, _, _, dims, _, _ in raw}
    return [Instruction(c, c in fused, name, op, dtype, dims, [shapes.get(o, ()) for o in ops],
                        line) for c, name, op, dtype, dims, ops, line in raw]


def step_config(**model):
    """The smoke demo at bf16 with XLA attention, batch 2; predictor heads of 48 (distinct from
    every token count, so shapes tell tokens from features)."""
    config = config_lib.load_config_file(os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs/pretrain/demo.py:smoke"))
    config.model.update(dtype="bfloat16", attention="xla", pred_num_heads=2)
    config.model.update(model)
    config.data.batch_size = 2
    config.mesh.update(data=1, fsdp=1)
    return config


def lower_step(config):
    """(lowered train step on abstract arguments, model bundle) of a config, one CPU device."""
    config_lib.validate(config)
    mesh = sharding.make_mesh(config.mesh)
    model = methods.get(config.method).build(config)
    abstract, shardings, _ = train_state.create(model.init, config.optim, mesh, jax.random.key(0))
    step = train_step.jit_train_step(model, config.optim, shardings,
                                     {"video": sharding.batch_sharding(mesh)},
                                     sharding.replicated(mesh))
    video = jax.ShapeDtypeStruct(model.encoder.shape.clip(config.data.batch_size), jnp.uint8)
    return step.lower(abstract, {"video": video}, jax.random.key(0)), model


def sequence_lengths(model):
    """Every attention length of the step: N (target pass), Kc_i (context), Kc_i + Kt_i
    (predictor; the fused predictor pads to the largest of these)."""
    gens = model.generators
    return ({model.encoder.shape.num_tokens} | {g.num_context for g in gens}
            | {g.num_context + g.num_target for g in gens})


def audit(config):
    """Compile the train step of `config` and read its HLO: a dict of the audited quantities."""
    t0 = time.perf_counter()
    lowered, model = lower_step(config)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    hlo = parse_hlo(compiled.as_text())
    b, s = config.data.batch_size, model.encoder.shape
    n, lengths = s.num_tokens, sequence_lengths(model)
    assert n not in {s.width, model.predictor.width}, "token count equal to a width: ambiguous"
    heads = {s.num_heads, model.predictor.num_heads}
    counts = {g.num_context for g in model.generators} | {g.num_target for g in model.generators}
    # Within the model (the mask sampler has its own [B, blocks, N] grids): any tensor ending
    # in [L, L] for an attention length L that is not a float [B, H, L, L] logits /
    # probabilities array, or a boolean [B, H, L, L] one in memory (the fused predictor's key
    # padding, broadcast inside a fusion, is never stored). Lengths equal to a feature width (ViT-L: Kc = 384 = Dp) are left out:
    # there an [L, L] weight could not be told from a mask.
    p = model.predictor
    widths = {s.width, 3 * s.width, s.mlp_hidden, s.width // s.num_heads, p.width, 3 * p.width,
              4 * p.width, p.width // p.num_heads}
    square = lengths - widths
    dense_masks = [i.text.strip()[:160] for i in hlo
                   if _in_model(i) and len(i.dims) >= 2 and i.dims[-1] == i.dims[-2] in square
                   and i.op != "parameter" and not (len(i.dims) == 4 and i.dims[1] in heads
                                                    and (i.dtype != "pred" or i.fused))]
    one_hot = [i.text.strip()[:160] for i in hlo if i.op == "dot" and any(
        n in dims and counts & (set(dims) - {n}) for dims in i.operands)]
    # The softmax's running max: a max-reduction of the rank-4 logits [B, H, L, S].
    softmax = [i for i in hlo if i.op == "reduce" and "reduce_max" in i.text
               and any(len(d) == 4 and d[-1] in lengths for d in i.operands)]
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    memory = compiled.memory_analysis()
    return {
        "model": model, "compile_s": compile_s, "hlo": hlo, "lowered": lowered,
        "dense_masks": dense_masks, "one_hot_dots": one_hot,
        "gathers": sum(i.op == "gather" for i in hlo), "scatters": sum(i.op == "scatter" for i in hlo),
        "softmax_lengths": sorted(i.operands[0][-1] for i in softmax),
        "xla_flops": cost["flops"], "analytic_flops": model.flops(b),
        "temp_bytes": memory.temp_size_in_bytes,
    }


def _in_model(instruction):
    """Whether an instruction comes from the encoder or the predictor (its op_name scope)."""
    return re.search(r'op_name="[^"]*(VisionTransformer|Predictor)', instruction.text) is not None


def dot_dtypes(lowered):
    """Counter of (lhs, rhs) element types of every dot_general of the lowered (unoptimised)
    program: what the code asks for, before the CPU compiler rewrites bf16 dots as f32."""
    types = re.findall(r"stablehlo\.dot_general.*?: \(tensor<[0-9x]*x?(\w+)>, tensor<[0-9x]*x?(\w+)>\)",
                       lowered.as_text())
    return collections.Counter(types)


@pytest.fixture(scope="module", params=[False, True], ids=["unfused", "fused"])
def audited(request):
    return audit(step_config(fuse_predictor=request.param))


def test_no_token_by_token_mask_or_bias(audited):
    # Only the attention logits / probabilities [B, H, L, S] are L x S; no mask, bias or
    # one-hot [.., L, S] tensor exists, with the fused predictor's key padding either.
    assert audited["dense_masks"] == []


def test_selections_are_gathers_not_one_hot_matmuls(audited):
    g = len(audited["model"].generators)
    # Per generator: context tokens from the patch grid, the predictor's positions of context
    # and targets, the targets from the target features (the baseline shares the last).
    assert audited["gathers"] >= 4 * g
    assert audited["scatters"] >= g  # the context gathers' backward: a scatter-add
    assert audited["one_hot_dots"] == []


def test_one_attention_softmax_per_pass_and_block(audited):
    model = audited["model"]
    enc, pred, g = model.encoder.shape.depth, model.predictor.depth, len(model.generators)
    predictor_passes = 1 if model.predictor.fuse else g
    # 1 target + g context passes of the encoder, the predictor's passes; the backward reuses
    # the saved probabilities and recomputes none (model.remat='none').
    assert len(audited["softmax_lengths"]) == (1 + g) * enc + predictor_passes * pred
    n = model.encoder.shape.num_tokens
    assert audited["softmax_lengths"].count(n) >= enc  # the target pass sees every token


def test_compiled_flops_match_the_analytic_count(audited):
    # flops.py counts matmuls and attention; XLA also counts elementwise work and the collapse
    # monitors' covariances, and skips the patch conv's input gradient. On this tiny model the
    # ratio is 1.0-1.2 (0.96 at ViT-L width, docs/PERFORMANCE.md); a pass counted twice or
    # dropped would move it by 20 % or more.
    ratio = audited["xla_flops"] / audited["analytic_flops"]
    assert 0.9 < ratio < 1.3, ratio


def test_matmuls_are_bf16_and_the_residual_stream_follows_the_switch():
    lowered, model = lower_step(step_config())
    dots = dot_dtypes(lowered)
    g, enc, pred = len(model.generators), model.encoder.shape.depth, model.predictor.depth
    # Every model matmul is bf16 x bf16 except: the two collapse monitors' covariances
    # (monitors.py) and, on the XLA attention path, the backward of q.k^T: its logits are
    # float32 (preferred_element_type), so the cotangent is float32 and dq, dk run as float32
    # matmuls, 2 per attention of the online passes (the target pass has no backward).
    assert sum(n for t, n in dots.items() if t != ("bf16", "bf16")) == dots[("f32", "f32")]
    assert dots[("f32", "f32")] == 2 + 2 * g * (enc + pred)
    # The residual stream: float32 adds of [B, L, D] by default, bf16 ones with the switch.
    for residual, kind in (("float32", "f32"), ("bfloat16", "bf16")):
        lowered, model = lower_step(step_config(residual_dtype=residual))
        d = model.encoder.shape.width
        adds = re.findall(rf"stablehlo\.add .*: tensor<2x\d+x{d}x(\w+)>", lowered.as_text())
        assert collections.Counter(adds).most_common(1)[0][0] == kind, collections.Counter(adds)


def main():
    """Print the audit of the step at ViT-L width with `--depth` blocks (the properties are per
    block; the full 24-block step takes too long to compile on a small CPU)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
    for name, keys in (("default", {}), ("residual_dtype=bfloat16", {"residual_dtype": "bfloat16"}),
                       ("fuse_predictor=True", {"fuse_predictor": True})):
        config = config_lib.base_config()
        config.data.update(source="synthetic", batch_size=args.batch)
        config.mesh.update(data=1, fsdp=1)
        config.model.update(depth=args.depth, pred_depth=args.depth, attention="xla", **keys)
        r = audit(config)
        print(f"--- {name}: {r['model'].describe()}")
        for line in r["dense_masks"][:3]:
            print("   ", line)
        print(f"compile {r['compile_s']:.0f} s; dense masks {len(r['dense_masks'])}; one-hot dots "
              f"{len(r['one_hot_dots'])}; gathers {r['gathers']}, scatters {r['scatters']}")
        print(f"softmaxes {len(r['softmax_lengths'])} over lengths "
              f"{collections.Counter(r['softmax_lengths'])}")
        print(f"FLOPs: XLA {r['xla_flops'] / 1e9:.1f} G, flops.py {r['analytic_flops'] / 1e9:.1f} G,"
              f" ratio {r['xla_flops'] / r['analytic_flops']:.3f}")
        print(f"temp bytes {r['temp_bytes'] / 1e6:.1f} MB; lowered dot dtypes "
              f"{dict(dot_dtypes(r['lowered']))}")


if __name__ == "__main__":
    main()
