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
            self._truncate_after(resume_step)
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def _truncate_after(self, step):
        """Drop records past the restored step: a resumed run logs those steps again."""
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self.path, "w") as f:
            f.writelines(rows)

    def write(self, step, scalars):
        """Record {name: float} at `step`."""
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if k != "step":
                self.tb.add_scalar(k, v, step)

    def close(self):
        if self.enabled:
            self.tb.close()


def read(workdir):
    """All rows of DIR/metrics.jsonl as a list of dicts."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
