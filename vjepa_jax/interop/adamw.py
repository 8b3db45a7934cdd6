"""AdamW moments between optax and the official torch optimizer state (VJEPA_SPEC §6.3).

The reference builds 4 param groups (encoder decayed, predictor decayed, encoder excluded,
predictor excluded) and keys its state by the running index over them; the frozen position
tables are parameters there without state.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vjepa_jax import mismatch, optim, trees
from vjepa_jax.interop.torch_names import from_torch_layout, to_numpy, to_torch_layout, torch_name


def _adam_state(opt_state):
    """The optax ScaleByAdamState inside `make_optimizer`'s state."""
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
             if isinstance(x, optax.ScaleByAdamState)]
    if len(found) != 1:
        raise ValueError(f"expected one Adam state in the optimizer state, found {len(found)}")
    return found[0]


def _param_groups(order):
    """The reference's 4 AdamW groups: [(module, name, shape)] lists, decayed enc/pred, then excluded."""
    groups = [[], [], [], []]
    for m, module in enumerate(("encoder", "predictor")):
        for name, shape in order[module]:
            excluded = "bias" in name or len(shape) == 1
            groups[m + 2 * excluded].append((module, name, shape))
    return groups


def adamw_to_torch(opt_state, order, optim_cfg, step):
    """optax AdamW state -> the official torch AdamW state_dict (4 param groups, VJEPA_SPEC §6.3).

    order: {'encoder'|'predictor': [(official name, torch shape)]} in named_parameters() order
    (a method layout's `torch_order`).
    """
    import torch  # noqa: PLC0415 - torch is optional
    adam = _adam_state(opt_state)
    count = int(jax.device_get(adam.count))
    mu, nu = ({m: {torch_name(p): np.array(to_torch_layout(p, np.asarray(jax.device_get(x))),
                                           np.float32, order="C")
                   for p, x in trees.flatten(tree[m]).items()} for m in ("encoder", "predictor")}
              for tree in (adam.mu, adam.nu))
    sched = {k: float(v) for k, v in optim.schedules(optim_cfg)(max(int(step), 1)).items()}
    b1, b2 = (float(b) for b in optim_cfg.betas)
    state, groups, index = {}, [], 0
    for g, members in enumerate(_param_groups(order)):
        group = {"lr": sched["lr"], "betas": (b1, b2), "eps": float(optim_cfg.eps),
                 "weight_decay": sched["wd"] if g < 2 else 0.0, "amsgrad": False,
                 "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                 "fused": None, "decoupled_weight_decay": True, "params": []}
        if g >= 2:
            group["WD_exclude"] = True
        for module, name, _ in members:
            group["params"].append(index)
            # Frozen tables get no gradient, hence no state, as in the reference; nothing is
            # stored before the first update either.
            if count > 0 and name in mu[module]:
                state[index] = {"step": torch.tensor(float(count)),
                                "exp_avg": torch.from_numpy(mu[module][name]),
                                "exp_avg_sq": torch.from_numpy(nu[module][name])}
            index += 1
        groups.append(group)
    return {"state": state, "param_groups": groups}


def adamw_from_torch(opt_sd, opt_state, params, order, where="opt"):
    """Official torch AdamW state_dict -> `opt_state` with mu, nu and counts replaced, strictly.

    order: as for adamw_to_torch; params: the Flax params the moments belong to.
    """
    groups = _param_groups(order)
    saved = opt_sd.get("param_groups") if isinstance(opt_sd, dict) else None
    if not isinstance(saved, list) or [len(g.get("params", ())) for g in saved] != [len(g) for g in groups]:
        got = None if not isinstance(saved, list) else [len(g.get("params", ())) for g in saved]
        raise ValueError(f"{where}: param groups of sizes {got} do not match the reference "
                         f"AdamW groups of this model {[len(g) for g in groups]} "
                         "(pass --fresh_optimizer to start the moments from zero)")
    by_name = {}
    for members, group in zip(groups, saved):
        for (module, name, shape), idx in zip(members, group["params"]):
            by_name[(module, name)] = (idx, shape)
    states = opt_sd.get("state", {})
    adam = _adam_state(opt_state)
    missing, wrong, steps, new = [], [], set(), {"mu": {}, "nu": {}}
    for module in ("encoder", "predictor"):
        for kind in new:
            new[kind][module] = {}
        for path, _ in trees.flatten(params[module]).items():
            name = torch_name(path)
            idx, shape = by_name[(module, name)]
            entry = states.get(idx)
            if not entry:  # never updated: zero moments, as a fresh optimizer has
                entry = {"step": 0.0, "exp_avg": np.zeros(shape, np.float32),
                         "exp_avg_sq": np.zeros(shape, np.float32)}
            if "exp_avg" not in entry or "exp_avg_sq" not in entry:
                missing.append(f"{module}.{name}")
                continue
            for kind, key in (("mu", "exp_avg"), ("nu", "exp_avg_sq")):
                if tuple(entry[key].shape) != tuple(shape):
                    wrong.append((f"{module}.{name}.{key}", entry[key].shape, shape))
                    continue
                new[kind][module][path] = from_torch_layout(path, to_numpy(entry[key]))
            steps.add(int(float(entry["step"])))
    if missing or wrong:
        raise mismatch.StrictLoadError(where, missing=missing, wrong_shape=wrong)
    steps.discard(0)
    if len(steps) > 1:
        raise ValueError(f"{where}: parameters have different AdamW step counts {sorted(steps)}")
    count = jnp.asarray(steps.pop() if steps else 0, jnp.int32)
    mu = {m: trees.unflatten(t) for m, t in new["mu"].items()}
    nu = {m: trees.unflatten(t) for m, t in new["nu"].items()}
    as_like = lambda tree, like: jax.tree.map(lambda x, l: jnp.asarray(x, l.dtype), tree, like)
    adam_new = adam._replace(count=count.astype(adam.count.dtype), mu=as_like(mu, adam.mu),
                             nu=as_like(nu, adam.nu))
    replaced = jax.tree.map(lambda x: adam_new if isinstance(x, optax.ScaleByAdamState) else x,
                            opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
    if hasattr(replaced, "count"):  # inject_hyperparams counts the same applied updates
        replaced = replaced._replace(count=count.astype(replaced.count.dtype))
    return replaced
