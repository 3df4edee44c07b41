"""The project's WebDataset reader (`paradiffusion.data.WebDatasetSource`, `tarfile` alone) against the
`webdataset` PyPI package, side by side in one run: samples/s on the same shards, and what each does with bad
samples (a corrupt image, a missing caption or image, a caption that is not UTF-8, a shard cut inside a member or
between samples).

The shards are ParaShapes stage-2 paragraphs written by the project's own shard writer
(`parashapes.storage.write_webdataset`, the img2dataset layout: `<key>.png`, `<key>.txt`, `<key>.json`).

Two levels are timed, each reader in turn, `--repeats` times, best (= least disturbed) pass reported:

* ``group``: the tar members grouped into ``{extension: bytes}`` samples, nothing decoded
  (`paradiffusion.shards.iter_tar_groups` vs `webdataset.WebDataset` with no decoder);
* ``items``: the training items `{"id", "image" (3, R, R), "text"}` with their skip counts
  (`WebDatasetSource` vs the same `WebDatasetSource.decode` fed by `webdataset.WebDataset`: the reader a port
  to the package would be).

    python scripts/bench_webdataset.py                      # 2000 samples in 8 shards, 64 px, 3 repeats
    python scripts/bench_webdataset.py --n 200 --repeats 1  # seconds (a smoke run)

Needs `pip install webdataset` (not a project requirement: docs/webdataset.md says why).
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from PIL import Image

from paradiffusion.data.sources import WebDatasetSource
from paradiffusion.shards import iter_tar_groups, shard_paths, tar_complete


def build_shards(out: Path, n: int, shard_size: int, resolution: int) -> list[Path]:
    from parashapes import generate_split
    from parashapes.storage import write_webdataset

    return write_webdataset(generate_split("stage2", n, seed=0), out, resolution, "plain", shard_size)


class PackageSource(WebDatasetSource):
    """`WebDatasetSource` with its tar reading done by `webdataset.WebDataset`: the same items and skip counts
    (`decode`), the package's exception handler counting what it catches as ``skipped_truncated``. A shard cut
    between two samples raises nothing in the package, so `tar_complete` is asked after each shard, as here."""

    def __iter__(self) -> Iterator[dict]:
        import webdataset as wds

        def handler(exc: Exception) -> bool:
            self.stats["skipped_truncated"] += 1
            logging.getLogger(__name__).warning("webdataset: %s", exc)
            return True  # go on with the next member / shard

        current, flagged = None, 0
        for sample in wds.WebDataset(self.shards, shardshuffle=False, handler=handler, empty_check=False):
            url = sample["__url__"]
            if url != current:
                self._check_end(current, flagged)
                current, flagged = url, self.stats["skipped_truncated"]
            item = self.decode(url, sample["__key__"], {k: v for k, v in sample.items() if not k.startswith("__")})
            if item is not None:
                yield item
        self._check_end(current, flagged)

    def _check_end(self, shard: str | None, flagged: int) -> None:
        """Count a shard that lost its end (cut between members) once, unless the handler already counted it."""
        if shard is None or self.stats["skipped_truncated"] > flagged:
            return
        try:
            complete = tar_complete(shard)
        except (tarfile.TarError, EOFError):
            complete = False
        if not complete:
            self.stats["skipped_truncated"] += 1


def group_tarfile(shards: list[str]) -> Iterator[dict]:
    for shard in shards:
        for _key, sample in iter_tar_groups(shard):
            yield sample


def group_package(shards: list[str]) -> Iterator[dict]:
    import webdataset as wds

    yield from wds.WebDataset(shards, shardshuffle=False, empty_check=False)


def one_pass(make: Callable[[], Iterable]) -> tuple[float, int]:
    """Samples/s of one full pass, and the samples in it."""
    t0 = time.perf_counter()
    count = sum(1 for _ in make())
    return count / (time.perf_counter() - t0), count


# -- bad samples ----------------------------------------------------------------------------------------------------
def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _good(i: int) -> list[tuple[str, bytes]]:
    return [(f"{i:04d}.png", _png((40 * i % 256, 0, 0))), (f"{i:04d}.txt", f"sample {i}".encode())]


def bad_cases(root: Path) -> dict[str, tuple[Path, int, str]]:
    """name -> (shard, good samples in it, the count the project's reader is expected to raise)."""
    root.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[Path, int, str]] = {}
    cases["corrupt image"] = (_write_tar(root / "corrupt.tar", _good(0) + [("0001.png", b"\x89PNG not really"),
                                                                         ("0001.txt", b"broken")] + _good(2)),
                              2, "skipped_unreadable")
    cases["missing caption"] = (_write_tar(root / "nocaption.tar", _good(0) + [("0001.png", _png((0, 0, 255)))]
                                           + _good(2)), 2, "skipped_incomplete")
    cases["missing image"] = (_write_tar(root / "noimage.tar", _good(0) + [("0001.txt", b"no image")] + _good(2)),
                              2, "skipped_incomplete")
    cases["caption not UTF-8"] = (_write_tar(root / "latin1.tar", _good(0) + [("0001.png", _png((0, 0, 255))),
                                                                              ("0001.txt", b"caf\xe9")] + _good(2)),
                                  2, "skipped_unreadable")
    whole = _write_tar(root / "whole.tar", [m for i in range(4) for m in _good(i)])
    data = whole.read_bytes()
    with tarfile.open(whole) as tar:
        members = tar.getmembers()
    # cut inside sample 2's image: samples 0-1 survive
    cut_in = members[4].offset_data + members[4].size // 2
    (root / "cut_in_member.tar").write_bytes(data[:cut_in])
    cases["shard cut inside a member"] = (root / "cut_in_member.tar", 2, "skipped_truncated")
    # cut right after sample 1's last member (no end-of-archive blocks): samples 2-3 are lost without an error
    cut_between = members[4].offset  # sample 2's header starts here
    (root / "cut_between.tar").write_bytes(data[:cut_between])
    cases["shard cut between samples"] = (root / "cut_between.tar", 2, "skipped_truncated")
    return cases


def package_plain(shard: Path) -> tuple[int, str]:
    """What the package alone reports, used as its documentation shows (decode to PIL, take image and caption):
    the samples out, and the exceptions its handler saw (the stock `warn_and_continue` warns and goes on)."""
    import webdataset as wds

    seen: list[str] = []

    def handler(exc: Exception) -> bool:
        seen.append(type(exc).__name__)
        return True

    ds = (wds.WebDataset(str(shard), shardshuffle=False, handler=handler, empty_check=False)
          .decode("pil", handler=handler).to_tuple("png;jpg;jpeg;webp", "txt;caption", handler=handler))
    n = sum(1 for _ in ds)
    return n, ", ".join(seen) or "nothing (silent)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="samples written")
    p.add_argument("--shard-size", type=int, default=250)
    p.add_argument("--resolution", type=int, default=64, help="rendered and read resolution")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="where shards go (default: a temporary folder)")
    a = p.parse_args(argv)
    try:
        import webdataset as wds
    except ImportError:
        raise SystemExit("this comparison needs the webdataset package: pip install webdataset") from None

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)  # the per-sample warnings of the bad cases are counted, not shown
    with tempfile.TemporaryDirectory() as tmp:
        root = a.out or Path(tmp)
        t0 = time.perf_counter()
        shards = [str(s) for s in build_shards(root / "shards", a.n, a.shard_size, a.resolution)]
        size = sum(Path(s).stat().st_size for s in shards) / 2**20
        print(f"{a.n} ParaShapes stage-2 samples, {a.resolution} px PNG, in {len(shards)} shards ({size:.1f} MiB), "
              f"written in {time.perf_counter() - t0:.1f} s; webdataset {wds.__version__}, torch threads 1, "
              f"best of {a.repeats} passes\n")
        results = {}
        rows = [("group", "tarfile (paradiffusion.shards)", lambda: group_tarfile(shards)),
                ("group", f"webdataset {wds.__version__}", lambda: group_package(shards)),
                ("items", "WebDatasetSource (tarfile)", lambda: WebDatasetSource(shards, a.resolution)),
                ("items", f"WebDatasetSource.decode on webdataset {wds.__version__}",
                 lambda: PackageSource(shards, a.resolution))]
        # interleave the readers' passes so a load change on a shared machine hits both alike
        best: dict[int, tuple[float, int]] = {}
        for _ in range(a.repeats):
            for i, (_level, _name, make) in enumerate(rows):
                r, c = one_pass(make)
                best[i] = (max(r, best.get(i, (0.0, 0))[0]), c)
        print(f"{'level':6} {'reader':55} {'samples':>8} {'samples/s':>10}")
        for i, (level, name, _make) in enumerate(rows):
            r, c = best[i]
            results[f"{level}/{name}"] = {"samples": c, "samples_per_s": round(r, 1)}
            print(f"{level:6} {name:55} {c:8d} {r:10.0f}")
        same = [it["id"] for it in WebDatasetSource(shards, a.resolution)] == \
               [it["id"] for it in PackageSource(shards, a.resolution)]
        print(f"\nsame items in the same order: {same}\n")

        print(f"{'bad shard':28} {'good':>4} | {'WebDatasetSource':40} | {'webdataset + decode':40} | "
              "webdataset alone (stock handler sees)")
        for name, (shard, good, key) in bad_cases(root / "bad").items():
            ours, theirs = WebDatasetSource(str(shard), 32), PackageSource(str(shard), 32)
            n_ours, n_theirs = sum(1 for _ in ours), sum(1 for _ in theirs)
            n_plain, seen = package_plain(shard)
            fmt = lambda n, s: f"{n} items, " + ", ".join(f"{k}={v}" for k, v in sorted(s.items()) if k != "ok")
            print(f"{name:28} {good:4d} | {fmt(n_ours, ours.stats):40} | {fmt(n_theirs, theirs.stats):40} | "
                  f"{n_plain} samples; {seen}")
            results[f"bad/{name}"] = {"good": good, "expected": key, "ours": dict(ours.stats), "ours_items": n_ours,
                                      "package_decode": dict(theirs.stats), "package_decode_items": n_theirs,
                                      "package_alone_samples": n_plain, "package_alone_handler_saw": seen}
        if a.out:
            (a.out / "bench_webdataset.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
