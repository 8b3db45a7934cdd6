"""JAX's persistent compilation cache, on by default: a restarted run reuses its compiled step.

`config.train.compilation_cache` names the directory ('' turns it off). The environment
variable JAX_COMPILATION_CACHE_DIR, when set, wins (JAX reads it itself; the tests set it).
"""
import logging
import os

import jax

_log = logging.getLogger(__name__)
MIN_COMPILE_SECONDS = 1.0  # cache programs that took at least this long to compile


def enable(directory):
    """Turn the persistent cache on in `directory` (~ expanded); returns the directory or None."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    if not directory:
        return None
    directory = os.path.expanduser(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:  # a read-only home must not stop a run: compile without the cache
        _log.warning("compilation cache %s is not usable (%s); compiling without it", directory, e)
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return directory
