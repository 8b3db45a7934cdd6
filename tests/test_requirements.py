"""The test install stays small on a CPU machine: no PyTorch and no CUDA wheels in it."""
import os

from common import ROOT


def requirement_names(name, seen=()):
    """Package names a requirements file installs, following `-r` includes."""
    names = set()
    for line in open(os.path.join(ROOT, name)):
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            names |= requirement_names(line[3:].strip(), seen + (name,))
        elif line and not line.startswith("-"):
            names.add(line.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0]
                      .strip().lower())
    return names


def test_the_test_install_has_no_torch_or_cuda():
    names = requirement_names("requirements-test.txt")
    assert {"jax", "flax", "pytest"} <= names
    assert not {n for n in names if n == "torch" or n.startswith(("nvidia", "triton"))}, names
    assert "torch" in requirement_names("requirements-interop.txt")
