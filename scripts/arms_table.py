"""Compare demo runs (arms) side by side: one row per run, stage and split, score [95% CI], the chance row, and the
object-exact rate by where the object is first mentioned (`by_mention`: words 0-76 / 77-255 / 256+).

    python scripts/arms_table.py runs/arms/*/ --stage stage3 --json docs/results/arms.json --figure docs/img/arms.png

Reads each run's `summary.json` (written by `scripts/demo.py`). Seeds of one arm (run directories named
`<arm>-s<seed>`) are also pooled: the mean over seeds with the range of the seeds' values.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

KEYS = ("object_exact", "scene_exact", "presence", "background")
BUCKETS = ("0-76", "77-255", "256+")


def load(runs: list[Path], stage: str | None) -> list[dict]:
    rows = []
    for run in runs:
        path = run / "summary.json"
        if not path.is_file():
            raise SystemExit(f"{run}: no summary.json (not a finished scripts/demo.py run)")
        summary = json.loads(path.read_text())
        for r in summary["rows"]:
            if stage is None or r["stage"] == stage:
                rows.append({"run": run.name, "arm": re.sub(r"-s\d+$", "", run.name), "seed": summary.get("seed"),
                             "minutes": summary.get("total_minutes"), **r})
    return rows


def fmt(r: dict, key: str) -> str:
    lo, hi = r["ci"][key]
    return f"{r['scores'][key]:.3f} [{lo:.3f}, {hi:.3f}]"


def table(rows: list[dict]) -> str:
    head = "| run | stage | split | n | " + " | ".join(KEYS) + " | chance object_exact | " + \
           " | ".join(f"object_exact, words {b}" for b in BUCKETS) + " | min |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        mention = [r["scores"].get(f"by_mention/{b}/object_exact", float("nan")) for b in BUCKETS]
        lines.append(f"| {r['run']} | {r['stage']} | {r['split']} | {r.get('n', '')} | "
                     + " | ".join(fmt(r, k) for k in KEYS) + f" | {fmt(r, 'chance/object_exact')} | "
                     + " | ".join(f"{m:.3f}" for m in mention) + f" | {r['minutes']:.1f} |")
    return "\n".join(lines)


def pooled(rows: list[dict]) -> str:
    """Mean over the seeds of each arm, with the seeds' min-max, per stage and split."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["arm"], r["stage"], r["split"])].append(r)
    lines = ["| arm | stage | split | seeds | object_exact mean (min-max) | chance mean | presence mean | "
             "background mean (min-max) | chance background mean |", "|---|---|---|---|---|---|---|---|---|"]
    for (arm, stage, split), rs in sorted(groups.items()):
        vals = [r["scores"]["object_exact"] for r in rs]
        lines.append(f"| {arm} | {stage} | {split} | {len(rs)} | {sum(vals) / len(vals):.3f} ({min(vals):.3f}-"
                     f"{max(vals):.3f}) | {sum(r['scores']['chance/object_exact'] for r in rs) / len(rs):.3f} | "
                     f"{sum(r['scores']['presence'] for r in rs) / len(rs):.3f} | "
                     f"{sum(bg := [r['scores']['background'] for r in rs]) / len(rs):.3f} ({min(bg):.3f}-{max(bg):.3f}) | "
                     f"{sum(r['scores']['chance/background'] for r in rs) / len(rs):.3f} |")
    return "\n".join(lines)


def figure(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 + 0.35 * len(rows) / 2 + 1), sharex=True)
    for ax, split in zip(axes, ("test", "heldout")):
        rs = [r for r in rows if r["split"] == split]
        y = list(range(len(rs)))
        for i, r in enumerate(rs):
            lo, hi = r["ci"]["object_exact"]
            ax.errorbar(r["scores"]["object_exact"], i, xerr=[[r["scores"]["object_exact"] - lo], [hi - r["scores"]["object_exact"]]],
                        fmt="o", color="C0", capsize=3)
            clo, chi = r["ci"]["chance/object_exact"]
            ax.errorbar(r["scores"]["chance/object_exact"], i, xerr=[[r["scores"]["chance/object_exact"] - clo],
                        [chi - r["scores"]["chance/object_exact"]]], fmt="x", color="0.5", capsize=2)
        ax.set_yticks(y, [f"{r['run']} {r['stage']}" for r in rs], fontsize=7)
        ax.set(title=f"{split}: object-exact (o) and chance (x), 95% CI", xlabel="object-exact")
        ax.invert_yaxis()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--stage", default=None, help="only this stage's rows (default: every stage)")
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--figure", type=Path, help="write an object-exact figure here (PNG)")
    a = p.parse_args(argv)
    rows = load(a.runs, a.stage)
    print(table(rows))
    print()
    print(pooled(rows))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    if a.figure:
        figure(rows, a.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
