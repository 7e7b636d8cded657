"""The package's imports point one way and sit at module top.

Layers, lowest first (a module may import its own layer and the ones below it):
models -> core helpers -> data -> checkpoints -> inference / evaluation / serving -> training ->
experiments -> commands. Every module of ``deeplab_load`` must belong to one layer (a new module
gets a line in ``LAYERS``). Imports of ``deeplab_load`` inside functions are only allowed in
``FUNCTION_IMPORTS_ALLOWED``. The walk reads the sources with ``ast``: nothing is imported.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "deeplab_load"
# The tools: command modules in a package of their own beside the library.
TOOLS = "deeplab_load_tools"

# (layer name, module prefixes): a prefix covers the module and its submodules; the package's own
# __init__ (PACKAGE) is matched exactly.
LAYERS = (
    ("models", ("deeplab_load.models",)),
    ("core", ("deeplab_load", "deeplab_load.errors", "deeplab_load.traced", "deeplab_load.finite",
              "deeplab_load.progress", "deeplab_load.atomic_files", "deeplab_load.output_folder",
              "deeplab_load.losses", "deeplab_load.lookahead", "deeplab_load.config_fields",
              "deeplab_load.dataset_names", "deeplab_load.overlap")),
    ("data", ("deeplab_load.data",)),
    ("checkpoints", ("deeplab_load.checkpoints",)),
    ("inference/evaluation/serving", (
        "deeplab_load.inference", "deeplab_load.inference_configs", "deeplab_load.multi_scale",
        "deeplab_load.metrics", "deeplab_load.replicated",
        "deeplab_load.comparison", "deeplab_load.cityscapes_metrics", "deeplab_load.evaluation",
        "deeplab_load.evaluation_stats", "deeplab_load.visualize", "deeplab_load.prediction",
        "deeplab_load.serving")),
    ("training", ("deeplab_load.training",)),
    ("experiments", ("deeplab_load.experiments",)),
    ("commands", ("deeplab_load.cli", "deeplab_load.train", "deeplab_load.evaluate",
                  "deeplab_load.export", "deeplab_load.predict", TOOLS)),
)
# Command modules import the library inside main() so that cli (imported first) quiets
# TensorFlow's start-up and --help stays fast.
COMMANDS = dict(LAYERS)["commands"]
# module -> why it may import inside functions.
FUNCTION_IMPORTS_ALLOWED = {
    **{name: "command module" for name in COMMANDS},
    # Tools are command modules too (the benchmark: one process per case, importing only what
    # it measures).
    **{f"{TOOLS}.{path.stem}": "command module (tool)"
       for path in (ROOT / TOOLS).glob("*.py") if path.stem != "__init__"},
}
# Cycles (sets of modules) tolerated until the change named beside them lands.
KNOWN_CYCLES = {}


def module_files(root, package=PACKAGE):
    """{module name: path} of the .py files under root/package."""
    modules = {}
    for path in sorted((pathlib.Path(root) / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported_names(node, module, is_package):
    """Absolute dotted names an Import / ImportFrom node may refer to (module or module.attr)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def _resolve(name, modules):
    """The module a dotted name lives in (the longest module prefix), or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(modules):
    """[(importer, imported module, line, inside a function?)] for imports of the package."""
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"

        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                nested = in_function or isinstance(
                    child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for name in _imported_names(child, module, is_package):
                        target = _resolve(name, modules)
                        if target is not None and target != module:
                            edges.append((module, target, child.lineno, in_function))
                visit(child, nested)

        visit(tree, False)
    return edges


def layer_of(module):
    """Index into LAYERS of the module's layer, or None when no layer lists it."""
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != PACKAGE and module.startswith(prefix + ".")):
                return index
    return None


def cycles(modules, edges):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph = {m: sorted({t for s, t, _, _ in edges if s == m}) for m in modules}
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter[0]
                    counter[0] += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph[successor])))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def problems(root, package=PACKAGE, function_imports_allowed=None, known_cycles=None):
    """Every rule broken under root/package, one line each."""
    allowed = FUNCTION_IMPORTS_ALLOWED if function_imports_allowed is None \
        else function_imports_allowed
    known = KNOWN_CYCLES if known_cycles is None else known_cycles
    modules = module_files(root, package)
    if package == PACKAGE and (pathlib.Path(root) / TOOLS).is_dir():
        modules.update(module_files(root, TOOLS))
    edges = import_edges(modules)
    found = [f"{m}: in no layer; add it to LAYERS in tests/test_import_graph.py"
             for m in modules if layer_of(m) is None]
    for source, target, line, in_function in edges:
        source_layer, target_layer = layer_of(source), layer_of(target)
        if None not in (source_layer, target_layer) and target_layer > source_layer:
            found.append(f"{source}:{line}: upward import of {target} "
                         f"({LAYERS[source_layer][0]} -> {LAYERS[target_layer][0]})")
        if in_function and source not in allowed:
            found.append(f"{source}:{line}: imports {target} inside a function; import it at "
                         f"the top of the module")
    for component in cycles(modules, edges):
        if component not in known:
            found.append(f"import cycle: {' <-> '.join(sorted(component))}")
    for component, why in known.items():
        if not component <= set(modules):
            found.append(f"KNOWN_CYCLES lists {sorted(component)} ({why}), which no longer all "
                         f"exist: remove the entry")
    for module, why in allowed.items():
        if module not in modules:
            found.append(f"FUNCTION_IMPORTS_ALLOWED lists {module} ({why}), which does not "
                         f"exist: remove the entry")
    return found


def test_package_imports_point_down_without_cycles_and_at_module_top():
    assert problems(ROOT) == []


def _write_package(root, files):
    for name, text in files.items():
        path = root / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _clean_package(root):
    _write_package(root, {
        "__init__.py": "",
        "models/__init__.py": "",
        "models/ops.py": "import os\n",
        "data/__init__.py": "from deeplab_load.data import common\n",
        "data/common.py": "from deeplab_load.models import ops\n",
        "training/__init__.py": "",
        "training/steps.py": "from deeplab_load.data.common import os\n",
        "train.py": "def main():\n    from deeplab_load.training import steps\n",
    })


def _problems(root):
    return problems(root, function_imports_allowed={"deeplab_load.train": "command"},
                    known_cycles={})


def test_checker_accepts_a_clean_tree(tmp_path):
    _clean_package(tmp_path)
    assert _problems(tmp_path) == []


@pytest.mark.parametrize("name, text, expected", [
    ("models/ops.py", "from deeplab_load.data import common\n",
     "deeplab_load.models.ops:1: upward import of deeplab_load.data.common (models -> data)"),
    ("data/common.py", "from ..training.steps import x\n",
     "deeplab_load.data.common:1: upward import of deeplab_load.training.steps"),
    ("data/common.py", "def f():\n    from deeplab_load.models import ops\n",
     "deeplab_load.data.common:2: imports deeplab_load.models.ops inside a function"),
    ("models/__init__.py", "from deeplab_load.models import ops\n"
                           "from deeplab_load.models import loop\n",
     "import cycle: deeplab_load.models.loop <-> deeplab_load.models.ops"),
    ("stray.py", "", "deeplab_load.stray: in no layer"),
])
def test_checker_reports_a_planted_bad_import(tmp_path, name, text, expected):
    _clean_package(tmp_path)
    _write_package(tmp_path, {name: text})
    if "cycle" in expected:
        _write_package(tmp_path, {"models/ops.py": "import deeplab_load.models.loop\n",
                                  "models/loop.py": "from deeplab_load.models.ops import y\n"})
    found = _problems(tmp_path)
    assert any(line.startswith(expected) for line in found), found


def test_stale_allow_list_entries_are_reported(tmp_path):
    _clean_package(tmp_path)
    found = problems(tmp_path, function_imports_allowed={"deeplab_load.train": "command",
                                                         "deeplab_load.gone": "moved"},
                     known_cycles={frozenset({"deeplab_load.a", "deeplab_load.b"}): "moved"})
    assert len(found) == 2 and all("remove the entry" in line for line in found), found
