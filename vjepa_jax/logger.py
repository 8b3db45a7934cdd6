"""Training metrics: DIR/metrics.jsonl (one JSON object per logged step) and TensorBoard events."""
import json
import logging
import os

from tensorboardX import SummaryWriter

_log = logging.getLogger(__name__)


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
    """The JSON rows of a .jsonl file; [] when it does not exist yet.

    A torn last line (a kill or a full disk during an append) is dropped with a warning; a bad
    line elsewhere raises a ValueError naming the file and the line.
    """
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    rows = []
    for i, (n, line) in enumerate(numbered):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"a {type(row).__name__}, not an object")
        except ValueError as e:
            if i == len(numbered) - 1:
                _log.warning("%s: dropping the incomplete last line %d (%r): %s", path, n,
                             line[:60], e)
                break
            raise ValueError(f"{path}, line {n}: not a JSON object: {e}") from e
        rows.append(row)
    return rows


def append_row(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_after(path, step):
    """Drop the rows of a .jsonl file whose 'step' is past `step` (and a torn last line);
    returns the rows kept."""
    rows = read_rows(path)
    if any("step" not in r for r in rows):
        raise ValueError(f"{path}: a row without 'step': not a metrics file of this program")
    rows = [r for r in rows if r["step"] <= step]
    tmp = path + ".tmp"  # replaced at once: a kill here leaves the old file, not half of it
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, path)
    return rows
