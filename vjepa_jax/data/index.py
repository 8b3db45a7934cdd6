"""Video index files: the official CSV (`/path/video.mp4 label`) and `.npy` path arrays.

CSV lines are split on the LAST space, so paths may contain spaces (the reference's pandas
reader would not accept them); blank lines are ignored; relative paths are taken relative to the
directory of the index file. A `.npy` file holds an array of paths, all labelled 0. Several index
files are concatenated in order; optional per-file weights give each file a share of the samples
(a weighted mixture: vjepa_jax/data/mixture.py).
"""
import dataclasses
import os

import numpy as np

from vjepa_jax.data import mixture


@dataclasses.dataclass(frozen=True)
class VideoIndex:
    """Concatenated index: entry i is (paths[i], labels[i]) from index file files[file_ids[i]]."""
    paths: tuple
    labels: np.ndarray  # int64 [N]
    file_ids: np.ndarray  # int32 [N]
    files: tuple
    weights: tuple  # one positive weight per file, () when unweighted

    def __len__(self):
        return len(self.paths)

    def file_range(self, file_id):
        """(start, stop) of the entries that came from index file `file_id`."""
        where = np.flatnonzero(self.file_ids == file_id)
        return (int(where[0]), int(where[-1]) + 1) if len(where) else (0, 0)


def _resolve(path, index_path):
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(index_path), path)


def read_csv(index_path):
    """List of (path, label) from an official-format CSV; one ValueError names file:line."""
    entries = []
    with open(index_path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            path, sep, label = line.rpartition(" ")
            path = path.rstrip()
            if not sep or not path:
                raise ValueError(f"{index_path}:{lineno}: expected '<path> <label>' separated by "
                                 f"a space, got {line!r}")
            try:
                label = int(label)
            except ValueError as e:
                raise ValueError(f"{index_path}:{lineno}: label {label!r} is not an integer "
                                 f"(line {line!r})") from e
            entries.append((_resolve(path, index_path), label))
    return entries


def read_npy(index_path):
    """List of (path, 0) from a `.npy` array of paths."""
    try:
        array = np.load(index_path, allow_pickle=True)
    except Exception as e:  # np.load raises several types for a bad file
        raise ValueError(f"{index_path}: not a readable .npy array of paths ({e})") from e
    array = np.asarray(array).reshape(-1)
    entries = []
    for i, path in enumerate(array):
        if isinstance(path, bytes):
            path = path.decode("utf-8")
        if not isinstance(path, (str, np.str_)) or not str(path):
            raise ValueError(f"{index_path}: entry {i} is {path!r}, expected a path string")
        entries.append((_resolve(str(path), index_path), 0))
    return entries


def read_index(files, weights=()):
    """Read and concatenate index files (.csv or .npy) -> VideoIndex; weights: one per file."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    files = tuple(str(f) for f in files)
    if not files:
        raise ValueError("data.index: no index files given")
    weights = mixture.check_weights(weights, files)
    paths, labels, file_ids = [], [], []
    for file_id, index_path in enumerate(files):
        if not os.path.exists(index_path):
            raise FileNotFoundError(f"index file {index_path} does not exist")
        if index_path.endswith(".npy"):
            entries = read_npy(index_path)
        else:
            entries = read_csv(index_path)
        if not entries:
            raise ValueError(f"{index_path}: index file has no entries")
        paths.extend(p for p, _ in entries)
        labels.extend(lab for _, lab in entries)
        file_ids.extend([file_id] * len(entries))
    return VideoIndex(paths=tuple(paths), labels=np.asarray(labels, np.int64),
                      file_ids=np.asarray(file_ids, np.int32), files=files, weights=weights)


def sample_weights(index):
    """Per-entry sampling probability [N]: w_d / n_d for an entry of file d, normalised to sum 1."""
    if not index.weights:  # unweighted: every entry equally likely
        return np.full(len(index), 1.0 / len(index))
    counts = np.bincount(index.file_ids, minlength=len(index.files)).astype(np.float64)
    per_entry = (np.asarray(index.weights, np.float64) / counts)[index.file_ids]
    return per_entry / per_entry.sum()
