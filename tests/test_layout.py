"""The package's layers import downwards only (README, *Code map*).

nn and data are the bottom layers and import nothing of ours outside themselves; io builds on
nn; tasks on io and nn; convert on tasks; train on all of them. Tools (benchmarks, PyTorch
peers, plots) live in experiments/, which the library never imports. The test reads every
source file's imports (including those inside functions), so a new import that breaks the
order fails here.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "perceiver_jax")

# layer -> the layers it may import (itself included).
ALLOWED = {
    "nn": {"nn"},
    "data": {"data"},
    "io": {"io", "nn", "data"},
    "tasks": {"tasks", "io", "nn", "data"},
    "convert": {"convert", "tasks", "io", "nn", "data"},
    "train": {"train", "convert", "tasks", "io", "nn", "data"},
}


def _sources():
  for directory, _, names in os.walk(PACKAGE):
    for name in names:
      if name.endswith(".py"):
        yield os.path.join(directory, name)


def _layer(path: str) -> str:
  """The subpackage a file of perceiver_jax/ belongs to ('' for the package's own files)."""
  parts = os.path.relpath(path, PACKAGE).split(os.sep)
  return parts[0] if len(parts) > 1 else ""


def _imports(path: str, top_level_only: bool = False):
  """Every module name the file imports, absolute (relative imports resolved); with
  top_level_only, those that run when the module is imported (not inside functions)."""
  tree = ast.parse(open(path).read(), path)
  package = ["perceiver_jax"] + os.path.relpath(os.path.dirname(path), PACKAGE).split(os.sep)
  package = [p for p in package if p != "."]
  for node in (tree.body if top_level_only else ast.walk(tree)):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
      yield base
      yield from (f"{base}.{alias.name}" for alias in node.names)


def _target_layer(module: str):
  parts = module.split(".")
  if parts[0] != "perceiver_jax" or len(parts) < 2:
    return None
  return parts[1] if parts[1] in ALLOWED else None


def test_every_file_belongs_to_a_layer():
  sources = list(_sources())
  assert {_layer(p) for p in sources} >= set(ALLOWED)  # The walk finds every layer's files.
  loose = [os.path.relpath(p, REPO) for p in sources
           if _layer(p) not in ALLOWED and os.path.basename(p) != "__init__.py"]
  assert not loose, f"modules outside the layers nn/io/data/tasks/convert/train: {loose}"


def test_layers_import_downwards_only():
  broken = []
  for path in _sources():
    layer = _layer(path)
    for module in _imports(path):
      if module.split(".")[0] == "experiments":
        broken.append(f"{os.path.relpath(path, REPO)} imports the tool {module}")
      target = _target_layer(module)
      if layer in ALLOWED and target is not None and target not in ALLOWED[layer]:
        broken.append(f"{os.path.relpath(path, REPO)} ({layer}) imports {module} ({target})")
  assert not broken, "imports against the layer order:\n" + "\n".join(broken)


@pytest.mark.parametrize("layer", ["nn", "io", "tasks", "data"])
def test_library_layers_need_no_tools(layer):
  """torch, matplotlib and scikit-learn are the tools' dependencies, not the library's: no
  library module imports them when it is imported (the digits builder imports scikit-learn
  when it prepares the data)."""
  heavy = {"torch", "matplotlib", "sklearn", "transformers"}
  found = [f"{os.path.relpath(p, REPO)}: {m}" for p in _sources() if _layer(p) == layer
           for m in _imports(p, top_level_only=True) if m.split(".")[0] in heavy]
  assert not found, found


def test_readme_code_map_names_every_subpackage():
  """The README's code map lists exactly the layers on disk (and test_layout's ALLOWED)."""
  readme = open(os.path.join(REPO, "README.md")).read()
  block = readme.split("## Code map", 1)[1].split("```", 2)[1]
  mapped = {line.split()[0].rstrip("/") for line in block.splitlines()
            if line.startswith("  ") and not line.startswith("   ")}
  on_disk = {name for name in os.listdir(PACKAGE)
             if os.path.isfile(os.path.join(PACKAGE, name, "__init__.py"))}
  assert mapped == on_disk == set(ALLOWED), (mapped, on_disk)
