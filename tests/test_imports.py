"""The import graph of `contrastive`: no circle, and the layers of DESIGN.md.

The graph is read from the source with `ast`, without importing anything: a node is a module
(`contrastive.train.loop`; a package is its `__init__`, `contrastive.train`), and every `import`
statement of a module, at module level or inside a function, is an edge from it:

- `import a.b.c` is an edge to `a.b.c`;
- `from a.b import c` is an edge to the submodule `a.b.c` where there is one, else (a name that
  `a.b`'s `__init__` defines or re-exports) to the package `a.b`; relative imports are resolved
  against the importing module's package.

Only modules of `contrastive` are nodes. The parent packages that Python initializes before a
submodule are not edges: a package `__init__` that re-exports its submodules would otherwise
close a circle with each of them, and Python handles that order itself.
"""

import ast
import collections
import os

CONTRASTIVE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "contrastive"
)


def module_names(root: str, package: str) -> dict[str, str]:
  """`{module name: file}` for every `.py` file under `root`, the directory of `package`."""
  out = {}
  for directory, _, files in os.walk(root):
    rel = os.path.relpath(directory, root)
    parts = [package] + ([] if rel == "." else rel.split(os.sep))
    for name in files:
      if name.endswith(".py"):
        stem = name[:-3]
        out[".".join(parts if stem == "__init__" else parts + [stem])] = os.path.join(
          directory, name
        )
  return out


def import_graph(root: str, package: str) -> dict[str, set[str]]:
  """`{module: modules of the package it imports}` (see the module docstring for the rules)."""
  modules = module_names(root, package)
  graph = {}
  for module, path in modules.items():
    is_package = path.endswith("__init__.py")
    here = module if is_package else module.rpartition(".")[0]
    targets = set()
    with open(path) as f:
      tree = ast.parse(f.read(), filename=path)
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
          base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
          sub = f"{base}.{alias.name}"
          targets.add(sub if sub in modules else base)
    graph[module] = {t for t in targets if t in modules and t != module}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One circle of `graph` as `[a, b, ..., a]`, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def _in(module: str, package: str) -> bool:
  return module == package or module.startswith(package + ".")


def _edges(graph, source: str, targets: tuple[str, ...]) -> list[str]:
  return sorted(
    f"{a} -> {b}"
    for a, bs in graph.items()
    if _in(a, source)
    for b in bs
    if any(_in(b, t) for t in targets)
  )


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
  """The graph between the top-level packages and modules of `contrastive` (`contrastive.X`)."""
  top = lambda m: ".".join(m.split(".")[:2])
  out = collections.defaultdict(set)
  for a, bs in graph.items():
    out[top(a)].update(top(b) for b in bs if top(b) != top(a))
  return dict(out)


GRAPH = import_graph(CONTRASTIVE, "contrastive")


def test_the_graph_reads_every_kind_of_import(tmp_path):
  """The rules of the module docstring on a small package with a circle through a function."""
  pkg = tmp_path / "pkg"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("from pkg.a import f\n")
  (pkg / "a.py").write_text(
    "import os\nfrom pkg import sub\nfrom pkg.sub import NAME\ndef f():\n  from . import b\n"
  )
  (pkg / "b.py").write_text("from .sub import c\n")
  (pkg / "sub" / "__init__.py").write_text("NAME = 1\n")
  (pkg / "sub" / "c.py").write_text("import pkg.a\n")
  graph = import_graph(str(pkg), "pkg")
  assert graph == {
    "pkg": {"pkg.a"},
    "pkg.a": {"pkg.sub", "pkg.b"},
    "pkg.b": {"pkg.sub.c"},
    "pkg.sub": set(),
    "pkg.sub.c": {"pkg.a"},
  }
  assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
  graph["pkg.sub.c"] = set()
  assert find_cycle(graph) is None


def test_no_module_imports_itself_back():
  cycle = find_cycle(GRAPH)
  assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_package_imports_itself_back():
  """Between the packages too (`train -> evaluate -> ... -> train` through different modules)."""
  cycle = find_cycle(package_graph(GRAPH))
  assert cycle is None, "import circle between packages: " + " -> ".join(cycle)


def test_evaluate_imports_nothing_of_train():
  assert not _edges(GRAPH, "contrastive.evaluate", ("contrastive.train",))


def test_losses_know_no_models_data_train_or_evaluate():
  layers = ("contrastive.models", "contrastive.data", "contrastive.train", "contrastive.evaluate")
  assert not _edges(GRAPH, "contrastive.losses", layers)


def test_models_know_no_data_train_or_evaluate():
  layers = ("contrastive.data", "contrastive.train", "contrastive.evaluate")
  assert not _edges(GRAPH, "contrastive.models", layers)


def test_a_run_config_is_data():
  """`contrastive.run` (the run config and its workdir) is read by train and evaluate alike, so
  it imports neither, nor anything else of the package."""
  assert not [
    e
    for e in _edges(GRAPH, "contrastive.run", ("contrastive",))
    if not e.split(" -> ")[1].startswith("contrastive.run")
  ]
  assert {"contrastive.run"} <= package_graph(GRAPH)["contrastive.evaluate"]
