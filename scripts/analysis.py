"""Reading a run back: TensorBoard scalars and the learning curve (faithfulness vs. wall-clock minutes).

A "run" is a directory written by ``make demo`` / ``python scripts/demo.py`` (``stage1/run``, …, ``summary.json``) or any directory holding TensorBoard event files of ``paradiffusion fit`` runs. Minutes are
measured from the earliest event under the directory, so they include everything the machine did in between
(stage 0, the demo's evaluations, checkpointing): the honest "minutes on this machine".

    python scripts/analysis.py runs/full --out docs/img/full_curve.png

prints the curve as a Markdown table (one row per validation) and writes the figure; ``--metrics`` picks the
``val/<metric>`` series (e.g. ``presence text_use``). The notebook (``notebooks/analysis.ipynb``) imports it with
``scripts/`` on ``sys.path``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

CURVE_METRICS = ("object_exact", "scene_exact", "presence", "position", "size", "shape", "text_use")


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float, float]]]:
    """``{tag: [(step, value, wall_time), …]}`` of one TensorBoard run directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def event_dirs(root: str | Path) -> list[Path]:
    """Every directory under ``root`` that holds TensorBoard event files, in path order."""
    return sorted({p.parent for p in Path(root).rglob("events.out.tfevents.*")})


def _stage_name(run_dir: Path, root: Path) -> str:
    return run_dir.relative_to(root).parts[0] if run_dir != root else root.name


def _load(root: Path) -> tuple[dict[Path, dict], float]:
    """Scalars of every event directory under ``root`` and the earliest wall time among them (the run's start)."""
    dirs = event_dirs(root)
    if not dirs:
        raise FileNotFoundError(f"{root}: no TensorBoard event files (expected <stage>/<version>/events.out.tfevents.*)")
    scalars = {d: read_scalars(d) for d in dirs}
    walls = [w for s in scalars.values() for series in s.values() for (_, _, w) in series]
    return scalars, (min(walls) if walls else 0.0)


def learning_curve(root: str | Path, metrics: Sequence[str] = CURVE_METRICS,
                   loaded: tuple[dict[Path, dict], float] | None = None) -> list[dict]:
    """One row per validation that logged ``val/<metric>``: ``{"stage", "step", "minutes", metric: value, …}``.

    Raises ``FileNotFoundError`` naming ``root`` if it holds no TensorBoard events.
    """
    root = Path(root)
    scalars, origin = loaded or _load(root)
    rows = []
    for d, s in scalars.items():
        anchor = f"val/{metrics[0]}"
        for step, _, wall in s.get(anchor, []):
            row = {"stage": _stage_name(d, root), "step": step, "minutes": (wall - origin) / 60}
            for m in metrics:
                values = [v for (st, v, _) in s.get(f"val/{m}", []) if st == step]
                row[m] = values[-1] if values else float("nan")
            rows.append(row)
    return sorted(rows, key=lambda r: r["minutes"])


def stage_end_minutes(root: str | Path, loaded: tuple[dict[Path, dict], float] | None = None) -> dict[str, float]:
    """Minutes (from the earliest event) at which each stage's last event was written."""
    root = Path(root)
    scalars, origin = loaded or _load(root)
    out: dict[str, float] = {}
    for d, s in scalars.items():
        last = max((w for series in s.values() for (_, _, w) in series), default=origin)
        out[_stage_name(d, root)] = max(out.get(_stage_name(d, root), 0.0), (last - origin) / 60)
    return out


def markdown_table(rows: list[dict], metrics: Sequence[str] = CURVE_METRICS) -> str:
    head = "| stage | step | minutes | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (3 + len(metrics))]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['step']} | {r['minutes']:.1f} | "
                     + " | ".join(f"{r[m]:.4f}" if m.startswith("text_use") else f"{r[m]:.3f}" for m in metrics) + " |")
    return "\n".join(lines)


PLOT_METRICS = ("object_exact", "presence", "position", "size", "shape")


def plot_learning_curve(root: str | Path, out: str | Path, metrics: Sequence[str] | None = None):
    """Validation faithfulness vs. minutes (lines; ``metrics``, default ``PLOT_METRICS``), plus the demo's per-stage
    evaluations from ``summary.json`` (markers at each stage's end, heldout and test paragraphs) and ``val/text_use``
    on its own axis. Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = tuple(m for m in (metrics or PLOT_METRICS) if m != "text_use")  # text use: the right axis below
    root = Path(root)
    loaded = _load(root)  # read the event files once for the curve and the stage boundaries
    rows = learning_curve(root, metrics, loaded)
    fig, ax = plt.subplots(figsize=(10.5, 4))
    for i, m in enumerate(metrics):
        color = f"C{i}"
        ax.plot([r["minutes"] for r in rows], [r[m] for r in rows], marker=".", color=color, label=f"val/{m} (16 para.)")
    summary_path = root / "summary.json"
    if summary_path.exists():
        ends = stage_end_minutes(root, loaded)
        summary = json.loads(summary_path.read_text())
        for r in summary.get("rows", []):
            # the untrained model is scored once stage 0 (the LM) is done, before stage 1 starts
            x = ends.get("stage0", 0.0) if r["stage"] == "untrained" else ends.get(r["stage"], 0.0)
            for i, m in enumerate(metrics):
                ax.scatter([x], [r["scores"].get(m, float("nan"))], color=f"C{i}", marker="s", s=25)
                if "test_scores" in r:
                    ax.scatter([x], [r["test_scores"].get(m, float("nan"))], color=f"C{i}", marker="^", s=30)
        for stage, x in ends.items():
            ax.axvline(x, color="0.8", lw=0.8, zorder=0)
            ax.text(x, 1.0, stage, rotation=90, va="top", ha="right", fontsize=7, color="0.4")
    text_use = [(r["minutes"], v) for r in learning_curve(root, ("text_use",), loaded) if (v := r["text_use"]) == v]
    if text_use:  # shuffled/true loss ratio: its own scale (1.00 = text ignored)
        ax2 = ax.twinx()
        ax2.plot(*zip(*text_use), color="black", ls="--", marker="x", label="val/text_use (right axis)")
        ax2.set_ylabel("text use (shuffled / true loss)")
        ax2.legend(fontsize=7, loc="lower left", bbox_to_anchor=(1.09, 0.0))
    ax.set(xlabel="minutes since the run started (this machine)", ylabel="ParaShapes faithfulness", ylim=(0, 1.02),
           title="Learning curve: lines = validation (16 paragraphs); ■ heldout / ▲ test (per-stage evaluation)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.09 if text_use else 1.01, 1.0))
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/analysis.py", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory (e.g. runs/demo)")
    p.add_argument("--out", help="write the learning-curve figure here (PNG)")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="val/<metric> names for the table and the figure (default: the faithfulness metrics and "
                        "text use), e.g. object_exact presence position")
    a = p.parse_args(argv)
    metrics = tuple(a.metrics) if a.metrics else CURVE_METRICS
    print(markdown_table(learning_curve(a.run, metrics), metrics))
    if a.out:
        plot_learning_curve(a.run, a.out, a.metrics)
        print(f"figure: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
