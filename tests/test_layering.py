"""The import graph: the library (`src/paradiffusion`) sits below the benchmark (`src/parashapes`).

No module of the library imports ParaShapes, not even lazily inside a function or by a class-path string, and the
whole library imports and runs its generic paths with ParaShapes absent; ParaShapes builds on the library's public
API and plugs into the `paradiffusion` command through entry points (`paradiffusion.plugins`).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "src" / "paradiffusion"
BENCHMARK = "parashapes"


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_no_library_module_imports_the_benchmark():
    found = []
    for path in sorted(LIBRARY.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        docstrings = _docstrings(tree)
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [f"{where}:{node.lineno}: import {a.name}" for a in node.names
                          if a.name.split(".")[0] == BENCHMARK]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == BENCHMARK:
                found.append(f"{where}:{node.lineno}: from {node.module} import ...")
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                  and BENCHMARK in node.value.lower()):
                found.append(f"{where}:{node.lineno}: string {node.value[:60]!r}")  # import_module / class paths
    assert not found, "the library must not name the benchmark:\n" + "\n".join(found)
    assert not (LIBRARY / BENCHMARK).exists()


def test_the_library_imports_and_works_without_the_benchmark(tmp_path):
    """Every library module imports with `parashapes` made unimportable; the DataModule reads a user's manifest, the
    plugin hooks find nothing to add, and `paradiffusion generate` still reads its prompt files."""
    code = f"""
import importlib, json, pkgutil, sys
sys.modules["{BENCHMARK}"] = None  # any `import {BENCHMARK}` now raises ImportError
import paradiffusion
names = [m.name for m in pkgutil.walk_packages(paradiffusion.__path__, "paradiffusion.")]
for name in names:
    importlib.import_module(name)
assert not any(m == "{BENCHMARK}" or m.startswith("{BENCHMARK}.") for m in sys.modules if sys.modules[m] is not None)
from PIL import Image
from paradiffusion.data import Stage2AlignmentData
from paradiffusion.data.stages import dataset_texts
tmp = sys.argv[1]
Image.new("RGB", (8, 8)).save(tmp + "/a.png")
open(tmp + "/m.jsonl", "w").write(json.dumps({{"image": "a.png", "text": "a black square"}}) + "\\n")
dm = Stage2AlignmentData(source="manifest", train_path=tmp + "/m.jsonl", resolution=8)
assert dataset_texts(dm.train_dataset()) == ["a black square"]
from paradiffusion.plugins import benchmarks, commands
assert benchmarks() == () and "data" not in commands()
from paradiffusion.cli import _read_prompts
open(tmp + "/p.jsonl", "w").write(json.dumps({{"id": "x", "paragraph": "a red circle"}}) + "\\n")
assert (_read_prompts(__import__("pathlib").Path(tmp + "/p.jsonl")).texts) == ["a red circle"]
print(len(names), "modules")
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert int(proc.stdout.split()[-2]) > 20


def test_the_benchmark_plugs_into_the_paradiffusion_command():
    from paradiffusion.plugins import benchmarks, commands
    from parashapes.cli import paradiffusion_data
    from parashapes.plugin import ParaShapesBenchmark

    assert commands()["data"] is paradiffusion_data  # `paradiffusion data ...` (pip install -e . registers it)
    assert any(isinstance(b, ParaShapesBenchmark) for b in benchmarks())  # `paradiffusion generate --split`
