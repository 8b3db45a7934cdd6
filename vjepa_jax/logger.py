"""Training metrics: DIR/metrics.jsonl (one JSON object per logged step) and TensorBoard events."""
import json
import os

from tensorboardX import SummaryWriter


class MetricWriter:
    """Appends scalars to metrics.jsonl and TensorBoard; a no-op on processes other than 0."""

    def __init__(self, workdir, enabled=True, resume_step=None):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        if not enabled:
            return
        if resume_step is not None:
            truncate_after(self.path, resume_step)  # a resumed run logs those steps again
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step, scalars):
        """Record {name: float} at `step`."""
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        append_row(self.path, row)
        for k, v in row.items():
            if k != "step":
                self.tb.add_scalar(k, v, step)

    def close(self):
        if self.enabled:
            self.tb.close()


def read(workdir):
    """All rows of DIR/metrics.jsonl as a list of dicts."""
    return read_rows(os.path.join(workdir, "metrics.jsonl"))


def read_rows(path):
    """The JSON rows of a .jsonl file; [] when it does not exist yet."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_row(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_after(path, step):
    """Drop the rows of a .jsonl file whose 'step' is past `step`; returns the rows kept."""
    rows = [r for r in read_rows(path) if r["step"] <= step]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows
