"""The package layout is the architecture: one-way imports between stages, no cycles, few loose
modules, every subpackage documented, old module paths still working."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "opd_diag"

# stage -> the stages it may import (itself always allowed). ``preflight.rules`` is the only
# part of ``preflight`` the report may read (the verdict table's vocabulary), never its runner.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "tasks": {"core"},
    "states": {"core", "tasks"},
    "probes": {"core", "tasks"},
    "preflight": {"core", "tasks", "states", "probes"},
    "train": {"core", "tasks", "states", "probes"},
    "report": {"core", "tasks", "probes", "preflight.rules", "preflight.budgets"},
    "integrations": {"core", "tasks", "states", "probes"},
    "zoo": {"core", "tasks", "states", "probes", "preflight", "train", "report",
            "integrations", "version"},
    "cli": {"*"},
    "testing": set(),
    "version": set(),
    "_compat": set(),
    "__init__": {"*"},
    "__main__": {"cli"},
}


# finer exceptions inside an allowed stage: the report reads run tables, never loads a model
FORBIDDEN: dict[str, set[str]] = {"report": {"core.models"}}
# single modules allowed one more stage: the teacher ranking writes its HTML through the report
# (a lazy import inside the function, after the runs are written)
EXTRA: dict[str, set[str]] = {"opd_diag.preflight.rank": {"report"}}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _imports(mod: str, path: Path) -> set[str]:
    """Every opd_diag module ``mod`` imports (module level or inside functions), resolved to
    the module file it names (``from pkg import sub`` -> ``pkg.sub`` when sub is a module)."""
    is_pkg = path.name == "__init__.py"
    here = mod.split(".") if is_pkg else mod.split(".")[:-1]
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("opd_diag"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                deps.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name.startswith("opd_diag"))
    deps.discard(mod)
    return deps


def _stage(mod: str) -> str:
    parts = mod.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _allowed(src: str, dst: str) -> bool:
    s, d = _stage(src), _stage(dst)
    if ".".join(dst.split(".")[1:3]) in FORBIDDEN.get(s, ()):
        return False
    if s == d or d == "version":  # anyone may read the version string
        return True
    rule = ALLOWED[s] | EXTRA.get(src, set())
    if "*" in rule:
        return d != "cli" or s in ("cli", "__main__")
    sub = ".".join(dst.split(".")[1:3])
    return d in rule or sub in rule


def test_every_module_is_in_a_known_stage():
    unknown = sorted({_stage(m) for m in MODULES} - set(ALLOWED))
    assert not unknown, f"modules outside the known stages: {unknown}; add them to ALLOWED"


def test_imports_follow_the_one_way_rule():
    bad = [f"{src} -> {dst}" for src, path in MODULES.items() for dst in _imports(src, path)
           if dst in MODULES or dst.startswith("opd_diag") if not _allowed(src, dst)]
    assert not bad, "imports against the layout's one-way rule:\n" + "\n".join(sorted(bad))


def test_the_rule_checker_catches_violations():
    # the checker itself can fail: these are the edges the issue names as forbidden
    assert not _allowed("opd_diag.report.tables", "opd_diag.states.capture")
    assert not _allowed("opd_diag.report.tables", "opd_diag.core.models")
    assert _allowed("opd_diag.report.tables", "opd_diag.core.runs")
    assert not _allowed("opd_diag.probes.overlap", "opd_diag.cli.main")
    assert not _allowed("opd_diag.core.runs", "opd_diag.probes.overlap")
    assert not _allowed("opd_diag.states.generations", "opd_diag.probes.novelty")
    assert not _allowed("opd_diag.zoo.demo", "opd_diag.cli")


def test_no_import_cycles():
    graph = {m: {d for d in _imports(m, p) if d in MODULES} for m, p in MODULES.items()}
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_few_loose_modules_and_documented_subpackages():
    loose = sorted(f.name for f in PKG.glob("*.py") if f.name not in ("__init__.py", "__main__.py"))
    assert len(loose) <= 4, f"too many loose modules at the package root: {loose}"
    for init in PKG.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 60, f"{init.parent.name}/ needs a docstring saying what it owns"
        if init.parent.name not in ("cli", "zoo"):
            assert "import" in doc, f"{init.parent.name}/ docstring must say what it may import"


def test_old_module_paths_alias_the_new_modules():
    import opd_diag
    from opd_diag._compat import MOVED

    for old, new in MOVED.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sys.modules.pop(old, None)
            mod = importlib.import_module(old)
        assert mod is importlib.import_module(new), old
        assert any(new in str(w.message) for w in caught), f"{old}: no warning naming {new}"
    assert opd_diag.run_capture is importlib.import_module("opd_diag.states.collect").run_capture


def test_public_api_names():
    import opd_diag as od

    for name in ("load_pair", "load_model", "run_capture", "run_preflight", "load_run",
                 "PreflightConfig", "Thresholds", "Verdict", "BUDGETS", "make_verifier",
                 "register_probe", "run_probe", "list_probes", "CaptureConfig", "SamplingConfig"):
        assert hasattr(od, name), name


@pytest.mark.parametrize("cmd", [[sys.executable, "-m", "opd_diag", "--help"]])
def test_python_m_runs_the_cli(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for sub in ("capture", "preflight", "train", "report", "zoo", "ingest", "demo"):
        assert sub in out.stdout
