"""Online evaluation of a pretraining workdir: k-NN, linear and (optionally) ridge readouts.

    python -m vjepa_jax.online_eval --config configs/pretrain/demo.py --workdir /tmp/vjepa_demo

Reads the latest checkpoint's encoder (--which target | encoder), scores it and a random-init
encoder of the same architecture on the config's labelled split (vjepa_jax/evaluation/online.py)
and prints the scores as JSON.
"""
import json

import jax
from absl import flags
from ml_collections import config_flags

from vjepa_jax import cli, distributed, methods
from vjepa_jax.evaluation import online
from vjepa_jax.loader import load_encoder


def run(config, workdir):
    """Print the scores of the latest checkpoint of a pretraining workdir."""
    encoder = load_encoder(workdir, which=flags.FLAGS.which)
    module = methods.get(config.method).encoder_from_config(config.model)
    result = online.online_eval(module, jax.device_get(encoder.params), config)
    print(json.dumps({"encoder": encoder.source, **result}, indent=1))


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Pretraining config (configs/pretrain/*.py).")
    flags.DEFINE_string("workdir", None, "Pretraining workdir whose latest checkpoint is evaluated.")
    flags.DEFINE_enum("which", "target", ["target", "encoder"], "EMA target or online encoder.")
    distributed.define_flags()
    cli.run_workdir_program(run, "vjepa_jax.online_eval")
