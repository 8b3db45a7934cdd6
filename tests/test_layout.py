"""The package's import graph, read from the source (AST): no cycles, no library module that
imports a program, and a method seam that the shared code reaches only through `methods.get`."""
import ast
import os

from common import ROOT

PACKAGE = os.path.join(ROOT, "vjepa_jax")
# The programs: `python -m vjepa_jax.NAME`. Everything else is library.
PROGRAMS = {"vjepa_jax.train", "vjepa_jax.eval", "vjepa_jax.convert", "vjepa_jax.bench",
            "vjepa_jax.online_eval", "vjepa_jax.masks", "vjepa_jax.classify"}


def modules():
    """{dotted name: path} of every module of the package."""
    out = {}
    for dirpath, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = (
                    os.path.join(dirpath, f))
    return out


def imports(path, known):
    """The package modules one file imports, anywhere in it (function-local imports too)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c`: the module a.b.c when c is one, else a.b itself.
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                     else node.module for a in node.names]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def graph():
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def find_cycle(edges):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_library_module_imports_a_program():
    edges = graph()
    assert PROGRAMS <= set(edges)
    upward = {(m, p) for m, deps in edges.items() if m not in PROGRAMS for p in deps & PROGRAMS}
    assert not upward, upward


def test_shared_code_does_not_import_a_method_package():
    """The step, loop, checkpoints and evals reach a method only through methods.get."""
    edges = graph()
    shared = ("vjepa_jax.train", "vjepa_jax.train_step", "vjepa_jax.train_state",
              "vjepa_jax.checkpoint", "vjepa_jax.workdir", "vjepa_jax.sharding", "vjepa_jax.eval",
              "vjepa_jax.bench", "vjepa_jax.loader", "vjepa_jax.convert")
    reach = {m: {d for d in edges[m] if d.startswith("vjepa_jax.methods.")} for m in shared}
    assert all(not deps for deps in reach.values()), reach
