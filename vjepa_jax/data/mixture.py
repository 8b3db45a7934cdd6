"""A weighted mixture of index files (V-JEPA 2: K710 0.335 / SSv2 0.100 / HowTo100M 0.565).

Each index file in `data.index` is one source; `data.weights` gives each source its share
w_d / sum(w) of the examples. The entries are drawn as one shuffled, endlessly repeated stream
per source (every pass over a file visits each of its videos once, reshuffled every pass), and
Grain's `MapDataset.mix` interleaves those streams in the proportions of the weights. Example k
of the mixture is a fixed function of k, the weights and the seed, so the mixture is
deterministic and the Grain iterator state (a position) resumes it exactly. docs/DATA.md,
"Weighted mixtures", compares this with the reference's sampler.
"""
import math
import os

import grain

# Grain mixes with integer proportions: the smallest weight is scaled to this many units.
PROPORTION_UNITS = 100


def check_weights(weights, files, key="data.weights"):
    """The weights as a tuple of floats; one ValueError naming `key` unless there is one finite
    weight > 0 per index file in `files` (or no weights at all: no mixture)."""
    try:
        weights = tuple(float(w) for w in weights)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{key}={weights!r}: expected numbers, one weight per index "
                         "file") from e
    if weights and len(weights) != len(files):
        raise ValueError(f"{key}: {len(weights)} weights for {len(files)} index files "
                         f"{list(files)}; give one weight per file, or none")
    if any(not (math.isfinite(w) and w > 0) for w in weights):
        raise ValueError(f"{key}: every weight must be a finite number > 0, got {list(weights)}")
    return weights


def proportions(weights):
    """Integer mixing proportions: the smallest weight becomes PROPORTION_UNITS, the others
    in ratio, rounded (0.335 / 0.1 / 0.565 -> 335 / 100 / 565).

    Grain would otherwise truncate w * 100 / min(w) itself, where a float just below an
    integer (2.9999999) loses a unit; rounding first makes the scaled values exact integers.
    """
    smallest = min(weights)
    return [float(max(1, round(w / smallest * PROPORTION_UNITS))) for w in weights]


def entries(ranges, weights, seed):
    """Infinite MapDataset of entry numbers mixed from the [start, stop) `ranges` of the sources.

    Source d is range(start_d, stop_d) shuffled with seed + d and repeated (a new order every
    pass); Grain's mix takes source d's next entry at the positions its share assigns to it,
    so any n consecutive examples hold n * w_d / sum(w) of source d, give or take one or two.
    """
    parts = [grain.MapDataset.range(start, stop).seed(seed + d).shuffle().repeat()
             for d, (start, stop) in enumerate(ranges)]
    return grain.MapDataset.mix(parts, proportions(weights))


def source_names(files):
    """Short names of the sources for metrics: the file names without directory and extension
    (`/data/k710_train.csv` -> `k710_train`), prefixed by the position (`0_train`) when two
    files would share a name."""
    stems = [os.path.splitext(os.path.basename(str(f).rstrip("/")))[0] or str(f)
             for f in files]
    if len(set(stems)) < len(stems):
        return tuple(f"{d}_{s}" for d, s in enumerate(stems))
    return tuple(stems)
