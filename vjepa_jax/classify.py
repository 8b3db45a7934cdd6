"""Classify videos (or images) with a frozen encoder and an attentive probe: top-k classes each.

    python -m vjepa_jax.classify --encoder /ckpt/vitl16.pth.tar --probe /ckpt/k400-probe.pth.tar \\
        --segments 8 --views 3 --labels k400_classes.txt video1.mp4 video2.mp4
    python -m vjepa_jax.classify --encoder RUN --probe EVAL_RUN val.csv --out predictions.csv

--encoder: a pretraining workdir or an official .pth.tar / .safetensors; --probe: an eval workdir
or an official probe file (docs/EVAL.md, "Released probes"). Inputs are video or image files, or
index files (`.csv`, the official `path label` format). The protocol is the reference's
(VJEPA_SPEC §7.3): --segments clips per video x --views crops, the prediction is the mean over
views of the softmax (vjepa_jax/classifier.py). --labels names the classes, one name a line in
the probe's class order (NOT alphabetical for the released K400 probe: see docs/EVAL.md).
Prints the top-k class indices (names) and probabilities per input; with an index, also the
top-1 / top-k accuracy over its labels and a CSV of every prediction (--out, default
predictions.csv). An unusable file is reported and the program exits 1 after the others.
"""
import csv
import logging
import os
import sys

from absl import flags

from vjepa_jax import cli

log = logging.getLogger("vjepa_jax.classify")


def define_flags():
    """Program flags; defined only when run as a program (the library never imports it)."""
    flags.DEFINE_string("encoder", None, "Encoder: pretraining workdir, official .pth.tar or "
                        ".safetensors (default: the one a probe workdir records).")
    flags.DEFINE_string("probe", None, "Probe: eval workdir or official probe file.")
    flags.DEFINE_string("labels", "", "Class names, one a line, in the probe's class order.")
    flags.DEFINE_integer("top_k", 5, "Classes printed per input.")
    flags.DEFINE_integer("segments", None, "Clips per video (K400 8, SSv2 2; default: the "
                         "probe run's, else 1).")
    flags.DEFINE_integer("views", None, "Spatial views per clip (the evals use 3; default: the "
                         "probe run's, else 1).")
    flags.DEFINE_integer("frame_step", None, "Frame step inside a clip (default: the probe "
                         "run's, else 4).")
    flags.DEFINE_integer("num_heads", 0, "Probe heads of an official probe file (0: the "
                         "encoder's).")
    flags.DEFINE_integer("head", 0, "Which probe of a V-JEPA 2 file's 'classifiers' sweep.")
    flags.DEFINE_enum("which", "target", ["target", "encoder"], "Encoder of a checkpoint: EMA "
                      "target or online.")
    flags.DEFINE_string("out", "", "CSV of the predictions (default predictions.csv when an "
                        "index is given).")
    flags.DEFINE_integer("seed", 0, "Seed of the clip positions inside long videos.")


def read_labels(path, num_classes):
    """Class names from a file, one a line; ValueError unless there are exactly num_classes."""
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != num_classes:
        raise ValueError(f"--labels {path}: {len(names)} names, the probe has {num_classes} "
                         "classes (one name a line, in the probe's class order)")
    return names


def inputs(args):
    """[(path, label or None)] of the command line: files as given, index files expanded."""
    from vjepa_jax.data import index as index_lib  # noqa: PLC0415 - after flag parsing

    out, indexed = [], False
    for arg in args:
        if arg.endswith(".csv"):
            out += [(p, int(y)) for p, y in index_lib.read_csv(arg)]
            indexed = True
        elif not os.path.isfile(arg):
            raise ValueError(f"{arg}: no such video, image or index file")
        else:
            out.append((arg, None))
    return out, indexed


def describe(indices, probs, names):
    return ", ".join(f"{i}{f' ({names[i]})' if names else ''} {p:.3f}"
                     for i, p in zip(indices, probs))


def main(argv):
    FLAGS = flags.FLAGS
    if FLAGS.probe is None:
        raise cli.UsageError("--probe is required")
    if len(argv) < 2:
        raise cli.UsageError("give at least one video, image or index file")
    from vjepa_jax.classifier import load_classifier, top_k  # noqa: PLC0415 - jax after flags

    clf = load_classifier(FLAGS.encoder, FLAGS.probe, which=FLAGS.which,
                          segments=FLAGS.segments, views=FLAGS.views,
                          frame_step=FLAGS.frame_step, num_heads=FLAGS.num_heads,
                          head=FLAGS.head)
    names = read_labels(FLAGS.labels, clf.num_classes) if FLAGS.labels else None
    items, indexed = inputs(argv[1:])
    k = min(FLAGS.top_k, clf.num_classes)
    print(f"{clf}; top {k} per input", flush=True)
    rows, failed, hits = [], [], {"top1": 0, "topk": 0, "labelled": 0}
    for path, label in items:
        try:
            probs = clf.predict(path, seed=FLAGS.seed)
        except ValueError as e:
            print(f"{path}: error: {e}", file=sys.stderr, flush=True)
            failed.append(path)
            rows.append({"path": path, "label": "" if label is None else label, "error": str(e)})
            continue
        indices, top = top_k(probs, k)
        print(f"{path}: {describe(indices, top, names)}", flush=True)
        row = {"path": path, "label": "" if label is None else label, "error": ""}
        for r, (i, p) in enumerate(zip(indices, top), 1):
            row[f"class_{r}"] = int(i)
            if names:
                row[f"name_{r}"] = names[i]
            row[f"prob_{r}"] = f"{p:.6f}"
        rows.append(row)
        if label is not None:
            hits["labelled"] += 1
            hits["top1"] += int(indices[0] == label)
            hits["topk"] += int(label in indices)
    if hits["labelled"]:
        n = hits["labelled"]
        print(f"accuracy over {n} labelled inputs: top-1 {100 * hits['top1'] / n:.2f} %, "
              f"top-{k} {100 * hits['topk'] / n:.2f} %", flush=True)
    out = FLAGS.out or ("predictions.csv" if indexed else "")
    if out:
        columns = ["path", "label"] + [f"{c}_{r}" for r in range(1, k + 1)
                                       for c in (("class", "name", "prob") if names
                                                 else ("class", "prob"))] + ["error"]
        with open(out, "w", newline="") as f:
            writer = csv.DictWriter(f, columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {out}", flush=True)
    if failed:
        raise ValueError(f"{len(failed)} of {len(items)} inputs were unusable (listed above)")


if __name__ == "__main__":
    define_flags()
    cli.run_program(main, "vjepa_jax.classify")
