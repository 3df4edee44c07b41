"""The README's quick start works as written, in order: every command of its "Quick start" and "Generate and export"
sections (and the Python API example) is read from README.md and run, shrunk only by the flags the other tests use
(`make demo` with `DEMO_ARGS="--budget smoke --eval-n 4 ..."`: 2 steps a stage, SmolLM2 cut to 2 blocks).

The commands run in a scratch directory, so the README's relative paths (`runs/demo/export`, `exported/`, ...) land
there; `make` targets run against this checkout (`make -C REPO`). `make test` is not run from inside the test suite
(it *is* the suite); the test checks that `.ci/run` calls it.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

README = REPO / "README.md"
SMOKE = "--budget smoke --eval-n 4"


def section(name: str) -> str:
    """The text of README section `## name` (up to the next `## `)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(name)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no section '## {name}'"
    return match.group(1)


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def commands(text: str) -> list[str]:
    """The shell commands of a section's ```bash blocks, comments stripped, in order."""
    out = []
    for block in blocks(text, "bash"):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_readme_sections_hold_the_documented_commands():
    quick = commands(section("Quick start"))
    assert quick[:2] == ["make demo", "make test"], quick
    assert any(c.startswith("paradiffusion generate --pipeline runs/demo/export") for c in quick)
    assert "make test" in (REPO / ".ci" / "run").read_text()  # CI runs the README's test command
    gen = commands(section("Generate and export"))
    assert [c.split()[1] for c in gen if c.startswith("paradiffusion")] == ["export", "generate", "generate"]
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def _run(cmd: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                          executable="/bin/bash")
    assert proc.returncode == 0, f"README command failed ({proc.returncode}): {cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_quick_start_then_generate_and_export_run_as_written(tmp_path):
    """`make demo` (smoke) -> `paradiffusion generate` on its export -> export / generate / the Python example, as the
    README says (after `make demo` the README points the export at `runs/demo/stage3/run/`)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    (tmp_path / "my_paragraphs.txt").write_text(
        "On a plain white background, a large red square sits in the top-left corner.\n"
        "A small blue circle rests in the centre of a black canvas.\n")
    demo = tmp_path / "runs" / "demo"
    ran = []
    for cmd in commands(section("Quick start")):
        if cmd == "make test":
            continue  # the suite itself (.ci/run runs it)
        if cmd == "make demo":
            # the same make target, shrunk; its outputs where the README expects them (relative to the cwd)
            cmd = (f"make -C {shlex.quote(str(REPO))} demo DEMO_ARGS='{SMOKE} --out {demo} "
                   f"--cache {tmp_path / 'runs' / 'text_cache'}'")
            proc = _run(cmd, tmp_path, env)
            assert "[demo] total" in proc.stdout and (demo / "summary.json").is_file()
            assert (demo / "export" / "model_index.json").is_file()
        else:
            _run(cmd, tmp_path, env)
        ran.append(cmd)
    assert len(list((tmp_path / "mine").glob("*.png"))) >= 2  # one PNG per paragraph (+ grid.png)

    for cmd in commands(section("Generate and export")):
        if cmd.startswith("printf"):
            cmd = cmd.replace("my_paragraphs.txt", "my_paragraphs_2.txt")
        cmd = cmd.replace("runs/tiny/stage3/run/", "runs/demo/stage3/run/").replace("my_paragraphs.txt",
                                                                                     "my_paragraphs_2.txt")
        _run(cmd, tmp_path, env)
        ran.append(cmd)
    assert (tmp_path / "exported" / "model_index.json").is_file()
    assert len(list((tmp_path / "samples").glob("*.png"))) >= 16
    assert len(list((tmp_path / "mine").glob("*.png"))) >= 1

    (python_example,) = blocks(section("Generate and export"), "python")
    proc = subprocess.run([sys.executable, "-c", python_example], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    from PIL import Image

    with Image.open(tmp_path / "square.png") as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    assert len(ran) >= 5
