"""The layer rules of docs/architecture.md, checked on the source text.

Every module under tmt/ is parsed with `ast` (nothing is imported or run), the
imports between tmt packages are collected (module level and inside functions
alike), and the rules of the architecture page are asserted: no import from a
lower layer up to a higher one, no circles between packages, no importlib
between tmt modules, fairseq2 only where the design puts it, no torch at import
time in tmt/core, and size limits for files and functions.

The exceptions that exist are listed below, each with its reason; an entry that
no longer matches anything fails the test too, so the lists stay honest.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "tmt"
DOC = "docs/architecture.md"

# The layers, bottom to top: the same list as the table in docs/architecture.md
# (keep the two in step). A module may import from its own layer (no circles,
# see test_no_cycles) and from layers below; never from a layer above. The
# names are the first component under tmt/ (a package or a top-level module);
# "tmt" is tmt/__init__.py itself.
LAYERS: list[tuple[str, ...]] = [
    ("tmt", "core"),  # errors, Modality/Direction, shards, audio, progress, jsonl/hypotheses I/O, protocols
    ("io", "config", "vocab"),  # the one trusted-pickle loader; dataclass configs; joint vocabulary
    ("store",),  # raw manifests, token store, validation, batching pipeline
    ("corpora",),  # corpus preparers (scenes, flickr8k, spokencoco)
    ("models",),  # the tmt transformer, the image VQ-VAE networks
    ("tokenizers",),  # speech / image / text tokenizers and their fitting
    ("vocoder",),  # unit vocoders
    ("training",),  # the translator's trainer (never evaluation/ or generation/)
    ("generation",),  # constrained decoding, Translator
    ("backtranslation",),  # pseudo pairs and pivots
    ("evaluation",),  # metrics, judges, scoring, reports
    ("serve",),  # HTTP API and web page
    ("testing",),  # fixtures made by code for the tests; no library module imports it
    ("cli", "__main__"),  # the click group; top layer, nothing in the library imports it
]

# (importing file, imported module) -> why this upward import is there for now.
UPWARD_ALLOWED: dict[tuple[str, str], str] = {}

# Files that call importlib.import_module / __import__ -> why. The strings they
# resolve must stay inside the file's own package (checked below), so the
# dynamic import can never cross a layer.
DYNAMIC_IMPORT_ALLOWED: dict[str, str] = {}

# Where fairseq2 may be imported (DESIGN section 6): path prefixes under the repo root.
FAIRSEQ2_ALLOWED: tuple[str, ...] = (
    "tmt/models/",
    "tmt/generation/",
    "tmt/training/",
    "tmt/store/pipeline",
)

MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60  # from the `def` line to the last line of the body

# file -> why it is longer than MAX_FILE_LINES for now.
LONG_FILES: dict[str, str] = {}

# "file::qualified.name" -> why it is longer than MAX_FUNCTION_LINES for now.
LONG_FUNCTIONS: dict[str, str] = {}


@dataclass(frozen=True)
class Module:
    path: str  # relative to the repo root, e.g. "tmt/store/pipeline.py"
    name: str  # dotted, e.g. "tmt.store.pipeline"
    tree: ast.Module

    @property
    def top(self) -> str:
        return top_of(self.name)


@dataclass(frozen=True)
class Import:
    module: Module
    target: str  # dotted name imported, e.g. "tmt.core.io" or "torch"
    line: int
    in_function: bool
    type_checking: bool


def top_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


@cache
def modules() -> tuple[Module, ...]:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT)
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(rel))
        found.append(Module(rel.as_posix(), ".".join(parts), tree))
    return tuple(found)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool = False, type_checking: bool = False) -> Iterator[tuple[ast.AST, bool, bool]]:
    """Every node with whether it sits inside a function and inside `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        yield child, in_function, type_checking
        inner_fn = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        inner_tc = type_checking or (isinstance(child, ast.If) and _is_type_checking(child.test))
        yield from _walk(child, inner_fn, inner_tc)


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.path.endswith("__init__.py"):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_tmt_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).is_dir() or (ROOT / rel).with_suffix(".py").is_file()


def imports_of(module: Module) -> Iterator[Import]:
    for node, in_fn, tc in _walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno, in_fn, tc)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                # `from tmt import io` imports the module tmt.io, `from tmt import TmtError` a name of tmt
                sub = f"{base}.{alias.name}"
                target = sub if base.split(".")[0] == "tmt" and _is_tmt_module(sub) else base
                yield Import(module, target, node.lineno, in_fn, tc)


@cache
def imports() -> tuple[Import, ...]:
    return tuple(imp for module in modules() for imp in imports_of(module))


def tmt_imports() -> Iterator[Import]:
    for imp in imports():
        if imp.target == "tmt" or imp.target.startswith("tmt."):
            yield imp


def layer_of(top: str) -> int:
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"tmt/{top} is in no layer; add it to LAYERS here and to the table in {DOC}")


def _where(imp: Import) -> str:
    return f"{imp.module.path}:{imp.line}"


def test_every_package_has_a_layer() -> None:
    tops = {m.top for m in modules()}
    missing = sorted(t for t in tops if not any(t in names for names in LAYERS))
    assert not missing, f"tmt/{missing} not in LAYERS; place them in tests/unit/test_architecture.py and {DOC}"


def test_no_upward_imports() -> None:
    bad = []
    used = set()
    for imp in tmt_imports():
        src, dst = imp.module.top, top_of(imp.target)
        if layer_of(dst) <= layer_of(src):
            continue
        key = (imp.module.path, imp.target)
        if key in UPWARD_ALLOWED:
            used.add(key)
            continue
        how = "inside a function" if imp.in_function else "at module level"
        bad.append(
            f"{_where(imp)}: [layer rule] {src}/ imports {imp.target} {how}, but {dst}/ is a higher layer "
            f"(see {DOC}); move the code down or the call up"
        )
    stale = sorted(set(UPWARD_ALLOWED) - used)
    assert not bad, "\n".join(bad)
    assert not stale, f"UPWARD_ALLOWED entries that match nothing any more, remove them: {stale}"


def test_training_never_imports_evaluation_or_generation() -> None:
    bad = [
        f"{_where(imp)}: [training rule] training/ imports {imp.target} (see {DOC})"
        for imp in tmt_imports()
        if imp.module.top == "training" and top_of(imp.target) in ("evaluation", "generation")
    ]
    assert not bad, "\n".join(bad)


def test_library_never_imports_cli() -> None:
    bad = [
        f"{_where(imp)}: [cli rule] library code imports {imp.target}; only tmt/cli and tmt/__main__ may (see {DOC})"
        for imp in tmt_imports()
        if imp.module.top not in ("cli", "__main__") and top_of(imp.target) == "cli"
    ]
    assert not bad, "\n".join(bad)


def test_no_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in tmt_imports():
        src, dst = imp.module.top, top_of(imp.target)
        if src != dst:
            graph[src].add(dst)
    cycles = _strongly_connected(graph)
    assert not cycles, f"[cycle rule] packages that import each other (see {DOC}): " + "; ".join(
        " <-> ".join(sorted(c)) for c in cycles
    )


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm; returns the components with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def _dynamic_import_calls(module: Module) -> Iterator[ast.Call]:
    for node, _, _ in _walk(module.tree):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
        if name in ("import_module", "__import__"):
            yield node


def _tmt_strings(module: Module) -> Iterator[tuple[int, str]]:
    for node, _, _ in _walk(module.tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("tmt."):
            yield node.lineno, node.value.split(":")[0]


def test_no_importlib_between_tmt_modules() -> None:
    bad = []
    used = set()
    for module in modules():
        calls = list(_dynamic_import_calls(module))
        if not calls:
            continue
        if module.path not in DYNAMIC_IMPORT_ALLOWED:
            bad += [
                f"{module.path}:{c.lineno}: [importlib rule] dynamic import; use a plain `import` "
                f"(inside the function if it must be lazy) so the import graph and mypy see it (see {DOC})"
                for c in calls
            ]
            continue
        used.add(module.path)
        # allowed files resolve only names of their own package: the lookup cannot cross a layer
        own = module.name if module.path.endswith("__init__.py") else module.name.rpartition(".")[0]
        bad += [
            f"{module.path}:{line}: [importlib rule] dynamic import target {value} is outside {own}; "
            f"import it plainly (see {DOC})"
            for line, value in _tmt_strings(module)
            if _is_tmt_module(value) and not value.startswith(own + ".")
        ]
    stale = sorted(set(DYNAMIC_IMPORT_ALLOWED) - used)
    assert not bad, "\n".join(bad)
    assert not stale, f"DYNAMIC_IMPORT_ALLOWED entries that match nothing any more, remove them: {stale}"


def test_fairseq2_only_where_allowed() -> None:
    bad = [
        f"{_where(imp)}: [fairseq2 rule] fairseq2 imported outside {', '.join(FAIRSEQ2_ALLOWED)} (see {DOC})"
        for imp in imports()
        if imp.target.split(".")[0] == "fairseq2" and not imp.module.path.startswith(FAIRSEQ2_ALLOWED)
    ]
    assert not bad, "\n".join(bad)


def test_core_has_no_torch_at_import_time() -> None:
    heavy = ("torch", "torchaudio", "fairseq2")
    bad = [
        f"{_where(imp)}: [core rule] tmt/core imports {imp.target} at module level; import it inside the "
        f"function that needs it (see {DOC})"
        for imp in imports()
        if imp.module.top == "core" and imp.target.split(".")[0] in heavy and not (imp.in_function or imp.type_checking)
    ]
    assert not bad, "\n".join(bad)


def _functions(module: Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield prefix + child.name, child
                yield from visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, prefix + child.name + ".")
            else:
                yield from visit(child, prefix)

    yield from visit(module.tree, "")


def test_file_sizes() -> None:
    bad = []
    used = set()
    for module in modules():
        n = len((ROOT / module.path).read_text(encoding="utf-8").splitlines())
        if n <= MAX_FILE_LINES:
            continue
        if module.path in LONG_FILES:
            used.add(module.path)
            continue
        bad.append(f"{module.path}:1: [size rule] {n} lines > {MAX_FILE_LINES}; split it along its seams (see {DOC})")
    stale = sorted(set(LONG_FILES) - used)
    assert not bad, "\n".join(bad)
    assert not stale, f"LONG_FILES entries now within {MAX_FILE_LINES} lines, remove them: {stale}"


def test_function_sizes() -> None:
    bad = []
    used = set()
    for module in modules():
        for qualname, fn in _functions(module):
            assert fn.end_lineno is not None
            n = fn.end_lineno - fn.lineno + 1
            if n <= MAX_FUNCTION_LINES:
                continue
            key = f"{module.path}::{qualname}"
            if key in LONG_FUNCTIONS:
                used.add(key)
                continue
            bad.append(
                f"{module.path}:{fn.lineno}: [size rule] {qualname} is {n} lines > {MAX_FUNCTION_LINES}; "
                f"break it into named steps (see {DOC})"
            )
    stale = sorted(set(LONG_FUNCTIONS) - used)
    assert not bad, "\n".join(bad)
    assert not stale, f"LONG_FUNCTIONS entries now within {MAX_FUNCTION_LINES} lines, remove them: {stale}"


def test_checker_sees_every_kind_of_import() -> None:
    """The parser itself, on a made-up module: plain, from, relative, lazy and TYPE_CHECKING imports."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import torch\n"
        "from tmt import io, TmtError\n"
        "from .modality import MODALITIES\n"
        "if TYPE_CHECKING:\n"
        "    import fairseq2.nn\n"
        "def f():\n"
        "    from tmt.cli import main\n"
        "    importlib.import_module('tmt.evaluation.score')\n"
    )
    module = Module("tmt/core/fake.py", "tmt.core.fake", ast.parse(source))
    got = {(i.target, i.line, i.in_function, i.type_checking) for i in imports_of(module)}
    assert got == {
        ("typing", 1, False, False),
        ("torch", 2, False, False),
        ("tmt.io", 3, False, False),
        ("tmt", 3, False, False),
        ("tmt.core.modality", 4, False, False),
        ("fairseq2.nn", 6, False, True),
        ("tmt.cli", 8, True, False),
    }
    assert [c.lineno for c in _dynamic_import_calls(module)] == [9]
    assert list(_tmt_strings(module)) == [(9, "tmt.evaluation.score")]
    assert _strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]
