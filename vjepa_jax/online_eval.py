"""Online evaluation of a pretraining workdir: k-NN, linear and (optionally) ridge readouts.

    python -m vjepa_jax.online_eval --config configs/pretrain/demo.py --workdir /tmp/vjepa_demo

Reads the latest checkpoint's encoder (--which target | encoder), scores it and a random-init
encoder of the same architecture on the config's labelled split (vjepa_jax/evaluation/online.py),
with progress bars on stderr, prints one line per readout beside its random-init baseline and
writes every score as JSON to --out (default WORKDIR/online_eval.json).
"""
import json
import os

import jax
from absl import flags
from ml_collections import config_flags

from vjepa_jax import cli, distributed, methods
from vjepa_jax.evaluation import online
from vjepa_jax.loader import load_encoder


def run(config, workdir):
    """Score the latest checkpoint of a pretraining workdir: a summary, the JSON to a file."""
    out = flags.FLAGS.out or os.path.join(workdir, "online_eval.json")
    encoder = load_encoder(workdir, which=flags.FLAGS.which)
    module = methods.get(config.method).encoder_from_config(config.model)
    opts = config.online_eval
    train, val, num_classes = online.labelled_split(config, opts)  # cached: online_eval reuses it
    print(f"online eval of {encoder.source}: {len(train[1])} train / {len(val[1])} val examples, "
          f"{num_classes} classes (chance {100 / num_classes:.1f} %)", flush=True)
    result = online.online_eval(module, jax.device_get(encoder.params), config, progress=True)
    for line in online.summary(result):
        print("  " + line)
    with open(out, "w") as f:
        json.dump({"encoder": encoder.source, **result}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Pretraining config (configs/pretrain/*.py).")
    flags.DEFINE_string("workdir", None, "Pretraining workdir whose latest checkpoint is evaluated.")
    flags.DEFINE_enum("which", "target", ["target", "encoder"], "EMA target or online encoder.")
    flags.DEFINE_string("out", None, "Where to write the scores as JSON "
                        "(default WORKDIR/online_eval.json).")
    distributed.define_flags()
    cli.run_workdir_program(run, "vjepa_jax.online_eval")
