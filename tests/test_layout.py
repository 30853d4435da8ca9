"""The layout: one package per concern, imports going down the layers and never in a
circle, small files and functions. Read from the source (the import statements of
every module, lazy ones included), not from what happens to be imported."""

import ast
import pathlib

from tests.helpers import ROOT


# Lowest first: a module may import from its own layer and the layers below it.
LAYERS = (
    ('models',),
    ('autoresearch.runtime',),
    ('autoresearch.data',),
    ('autoresearch.space',),
    ('autoresearch.trial',),
    ('autoresearch.workdir',),
    ('autoresearch.early_stop',),
    ('autoresearch.agents', 'third_party'),   # third_party: the Optuna agents
    ('autoresearch.views',),
    ('autoresearch.search',),
    ('autoresearch.synthetic',),
    ('autoresearch.modes', 'autoresearch.pretrain'),
)
SOURCE_FOLDERS = ('autoresearch', 'models', 'third_party', 'configs', 'benchmarks', 'tests')
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def _modules() -> dict[str, pathlib.Path]:
  """Dotted name -> file of every module of the project's packages."""
  out = {}
  for folder in ('autoresearch', 'models', 'third_party'):
    for path in pathlib.Path(ROOT, folder).rglob('*.py'):
      parts = path.relative_to(ROOT).with_suffix('').parts
      out['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  return out


def _imports(path: pathlib.Path, modules: dict) -> set[str]:
  """The project modules `path` imports, at any depth of its code."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for a in node.names:   # `from package import module` names a module
        full = f'{node.module}.{a.name}'
        found.add(full if full in modules else node.module)
  return {name for name in found if name in modules}


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _layer(module: str) -> int:
  for i, layer in enumerate(LAYERS):
    if any(module == p or module.startswith(p + '.') for p in layer):
      return i
  return -1   # the package roots (autoresearch/__init__.py): below everything


def test_the_import_graph_has_no_cycle():
  graph, state, cycles = _graph(), {}, []

  def visit(node, stack):
    state[node] = 'open'
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 'open':
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = 'done'
  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  assert cycles == []


def test_no_module_imports_from_a_layer_above_its_own():
  upward = sorted(f'{m} -> {i}' for m, imported in _graph().items() for i in imported
                  if _layer(i) > _layer(m))
  assert upward == []


def test_every_module_has_a_layer_and_the_package_root_holds_only_the_entry_points():
  assert [m for m in _graph() if _layer(m) < 0] == ['autoresearch']
  root_files = sorted(p.name for p in pathlib.Path(ROOT, 'autoresearch').glob('*.py'))
  assert root_files == ['__init__.py', 'modes.py', 'pretrain.py']


def test_files_and_functions_are_small():
  too_long = []
  results = pathlib.Path(ROOT, 'benchmarks', 'results')   # data (and old trees unpacked there)
  paths = [pathlib.Path(ROOT, 'main.py')] + [
      p for folder in SOURCE_FOLDERS for p in pathlib.Path(ROOT, folder).rglob('*.py')
      if results not in p.parents]
  for path in paths:
    source = path.read_text()
    name = path.relative_to(ROOT).as_posix()
    if source.count('\n') > MAX_FILE_LINES:
      too_long.append(f'{name}: {source.count(chr(10))} lines')
    for node in ast.walk(ast.parse(source)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES:
          too_long.append(f'{name}: {node.name} {lines} lines')
  assert too_long == []
