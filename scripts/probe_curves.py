"""Validation curves of probe runs: read the TensorBoard events under `<root>/<probe>/` (all files of a run
directory, so a resumed run's second file is included), merge them by step, write `curves.json` and optionally plot one tag for all probes.

    python scripts/probe_curves.py /tmp/gpu_probes --json runs/gpu_probes/curves.json
    python scripts/probe_curves.py --from-json docs/gpu_probes/curves.json --tag val/text_use_stage1 \\
        --plot docs/img/gpu_text_use.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_curves(root: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """`{probe: {tag: [(step, value), ...]}}` for the `val/*` and `train/loss` scalars of each probe under `root`."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/analysis.py, also when run from elsewhere
    from analysis import event_dirs, read_scalars

    curves: dict[str, dict[str, dict[int, float]]] = {}
    for run_dir in event_dirs(root):
        probe = run_dir.relative_to(root).parts[0]
        for tag, series in read_scalars(run_dir).items():
            if tag.startswith("val/") or tag == "train/loss":
                # a resumed run's later events file wins on a repeated step
                curves.setdefault(probe, {}).setdefault(tag, {}).update({step: value for step, value, _ in series})
    return {p: {t: sorted(v.items()) for t, v in tags.items()} for p, tags in curves.items()}


def plot(curves: dict, tag: str, out: Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for probe, tags in sorted(curves.items()):
        if tag in tags:
            steps, values = zip(*tags[tag])
            ax.plot(steps, values, marker=".", label=probe)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(tag)
    ax.set_title(title or tag)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", type=Path, help="directory with one sub-directory per probe")
    p.add_argument("--from-json", type=Path, help="read curves from a curves.json instead of events files")
    p.add_argument("--json", type=Path, help="write the curves here")
    p.add_argument("--tag", default="val/text_use_stage1")
    p.add_argument("--plot", type=Path, help="PNG of --tag against step for every probe")
    p.add_argument("--title")
    a = p.parse_args()
    if (a.root is None) == (a.from_json is None):
        p.error("give a root directory or --from-json")
    curves = json.loads(a.from_json.read_text()) if a.from_json else read_curves(a.root)
    if not curves:
        raise SystemExit(f"no events files under {a.root}/<probe>/")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(curves, indent=1))
    for probe, tags in sorted(curves.items()):
        last = tags.get(a.tag, [(None, None)])[-1]
        print(f"{probe:20s} {a.tag} at step {last[0]}: {last[1]}")
    if a.plot:
        plot(curves, a.tag, a.plot, a.title)


if __name__ == "__main__":
    main()
