"""Test setup: CPU only, 8 fake devices so sharding code paths run on one machine."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Besides the 8 devices: skip LLVM's expensive optimisations, which roughly halves compile time
# (most of the suite's time) and changes results only at float rounding level.
for _flag in ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0",
              "--xla_llvm_disable_expensive_passes=true"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

# Tests compile the same small programs many times (in-process and in subprocesses): share
# them through JAX's persistent compilation cache. Only speed changes, never results.
import tempfile  # noqa: E402

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "vjepa_jax_test_compilation_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
