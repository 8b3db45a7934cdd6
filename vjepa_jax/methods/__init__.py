"""JEPA methods behind one seam: `config.method` names a subpackage of vjepa_jax/methods/.

A method is everything that differs between V-JEPA, I-JEPA and V-JEPA 2: the mask generators it
samples, how its predictor is conditioned and what it predicts, its loss, the reference defaults
of its config and the official PyTorch layout of its checkpoints. Each method package exposes
one `METHOD = Method(...)`; the train step, loop, sharding, checkpoints and evals only ever talk
to that object and to the model bundle its `build` returns (docs/ARCHITECTURE.md, "The method
seam", lists what a bundle provides). Adding a method adds a package and configs, nothing else.
"""
import dataclasses
import importlib
import pkgutil
import types
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Method:
    """One JEPA method: functions of a config, and the module of its checkpoint layout."""
    name: str
    defaults: Callable  # (config) -> None: write the reference model / masks / optim sections
    validate: Callable  # (config) -> None: ValueError naming the first unusable method key
    build: Callable  # (config) -> model bundle: encoder, predictor, masks, loss (a validated config)
    encoder_from_config: Callable  # (config.model) -> the encoder module alone (loader, evals)
    layout: types.ModuleType  # official PyTorch checkpoint names and geometry inference:
    # PREFIX, SPECS (interop/state_dicts.ModuleNames of encoder and predictor), matches, tables,
    # infer_model, model_config, check_config (methods/vjepa/layout.py)


def check_key(ok, key, value, expected):
    """For a method's validate: raise ValueError naming config.`key` unless ok."""
    if not ok:
        raise ValueError(f"config.{key}={value!r}: expected {expected}")


def names():
    """The methods that exist: the subpackages of vjepa_jax/methods/, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg)


def get(name):
    """The Method of `config.method` = name; ValueError naming the choices for an unknown one."""
    if name not in names():
        raise ValueError(f"config.method={name!r}: expected one of {names()}")
    return importlib.import_module(f"{__name__}.{name}").METHOD


def detect(state_dict):
    """The method whose official layout an encoder state dict has (its patch conv tells)."""
    found = [n for n in names() if get(n).layout.matches(state_dict)]
    if not found:
        raise ValueError("the state dict matches no known layout (no patch_embed.proj.weight of "
                         f"a known shape); known methods: {names()}")
    return found[0]
