"""`make tables`: run records → the paper's table (Markdown, LaTeX, CSV) and figures. Never re-runs anything.

    python scripts/make_tables.py --table fmnist-mini [--source runs/fmnist-mini | wandb:<entity>/<project>]
        [--out results/fmnist-mini] [--profile full|smoke]

Prints the runs found by status, the problems (missing, running, failed, corrupt runs) and the table. Exit
code 0 whenever the table could be built (also with missing or diverged runs); 2 with one ``error:`` line
for an unknown table or an unreadable source.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tvlars.errors import UserError
from tvlars.experiments import load_spec, smoke_spec
from tvlars.report import build_table, collect, status_summary, write_figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help="spec name (experiments/<name>.yaml) or path")
    parser.add_argument("--source", help="run directory tree or wandb:<entity>/<project> (default runs/<table>)")
    parser.add_argument("--out", help="output directory (default results/<table>)")
    parser.add_argument("--profile", choices=("full", "smoke"), default="full",
                        help="smoke: the table as `reproduce_table.py --profile smoke` shrank it")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.table)
        if args.profile == "smoke":
            spec = smoke_spec(spec, data_root="")
        df = collect(args.source or Path("runs") / spec.name)
        out = Path(args.out or Path("results") / spec.name)
        out.mkdir(parents=True, exist_ok=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot create the output directory ({exc}); pass --out <writable dir>", file=sys.stderr)
        return 2
    table = build_table(spec, df)
    written = []
    for name, text in (("table.md", table.markdown), ("table.tex", table.latex), ("table.csv", table.csv)):
        (out / name).write_text(text)
        written.append(out / name)
    written += write_figures(spec, table, df, out)
    print(status_summary(spec, df))
    print(f"{len(table.problems)} problem(s)" + (" (listed under Problems below)" if table.problems else "") + "\n")
    print(table.markdown)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
