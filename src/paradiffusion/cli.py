"""The `paradiffusion` entry point.

`paradiffusion fit|validate|test|predict ...` is a LightningCLI; `data`, `generate`, `export` and `demo`
are plain subcommands of the same entry point.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "data":
        from paradiffusion.parashapes.cli import main as data_main

        return data_main(argv[1:])
    raise SystemExit("paradiffusion: subcommand not wired yet")


if __name__ == "__main__":
    sys.exit(main())
