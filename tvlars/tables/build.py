"""`make tables`: run records → the paper's table (Markdown, LaTeX, CSV), figures and the records beside them.
Never re-runs anything.

    python -m tvlars.tables.build --table fmnist-mini [--source runs/fmnist-mini | wandb:<entity>/<project>]
        [--out results/fmnist-mini] [--profile full|smoke] [--allow-empty] [--replace-records]

The source defaults to ``runs/<table>`` when it exists, else to the committed records ``results/<table>/runs``.
Writes into ``--out`` (default ``results/<table>``) the table files of the spec's kind (:mod:`tvlars.tables.kinds`:
``table.md``, ``table.tex``, ``table.csv``; ``kind: scaling``: ``scaling.md``, ``scaling.csv``; ``kind:
lr_window``: ``lr_window.md``, ``lr_window.csv``, ``lr_window_rows.csv``), the figures its records support (figures
of an older build that this one does not draw are removed), from a local source a copy
of the table's run records in ``<out>/runs/`` (no checkpoints, backbones, W&B files), and ``RUN.md``, how the results
were produced, from those records and the spec (tvlars.tables.run_md). Prints the runs found by
status, the problems and the table. It holds ``--out`` (tvlars.lock) while it writes there. Exit code 0 whenever the
table was written; 2 with one ``error:`` line for an unknown table, an unreadable source, a source without any run
of the table or without any finished one (unless --allow-empty), records of an older build that this one would
drop (unless --replace-records), an output directory another process holds, or one that cannot be written (full).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import pandas as pd

from tvlars.errors import UserError
from tvlars.lock import DirLock
from tvlars.records import FINAL, Status, write_atomic
from tvlars.tables import archive, run_md
from tvlars.tables.collect import WANDB_PREFIX, collect
from tvlars.tables.design import Spec
from tvlars.tables.instrument_figures import FIGURES as INSTRUMENT_FIGURES
from tvlars.tables.kinds import KINDS
from tvlars.tables.spec import load_spec, smoke_spec

DRAWN = {*(name for kind in KINDS.values() for name in kind.figure_files), *INSTRUMENT_FIGURES}
"""Every figure a build may write (one it does not write this time is removed)."""


def default_source(table: str, results: Path) -> Path:
    """``runs/<table>`` when a sweep ran here, else the records committed with the table."""
    local = Path("runs") / table
    return local if local.is_dir() else results / "runs"


def status_summary(spec: Spec, df: pd.DataFrame) -> str:
    """One line: runs of this table by status, corrupt records, and runs of other tables ignored."""
    mine = df[df["table"] == spec.name]
    counts = ", ".join(f"{n} {status}" for status, n in mine["status"].value_counts().items()) or "none"
    expected = sum(spec.runs_per_cell(r) for r in spec.rows) * len(spec.columns)
    corrupt = int((df["status"] == "corrupt").sum())
    other = len(df) - len(mine) - corrupt
    return (f"{len(mine)} run(s) of table {spec.name} (expected {expected}): {counts}; {corrupt} unreadable "
            f"summary.json; {other} run(s) of other tables or unlabelled ignored")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help="spec name (experiments/<name>.yaml) or path")
    parser.add_argument("--source", help="run directory tree or wandb:<entity>/<project> "
                                         "(default runs/<table>, else results/<table>/runs)")
    parser.add_argument("--out", help="output directory (default results/<table>)")
    parser.add_argument("--profile", choices=("full", "smoke"), default="full",
                        help="smoke: the table as `python -m tvlars.tables.reproduce --profile smoke` shrank it")
    parser.add_argument("--allow-empty", action="store_true",
                        help="write the table even when the source holds no run of it (every cell '–')")
    parser.add_argument("--replace-records", action="store_true",
                        help="let <out>/runs lose records that this build does not use")
    args = parser.parse_args(argv)
    try:
        with contextlib.ExitStack() as held:
            return make(args, held)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {exc.filename or 'the output directory'} ({exc.strerror}); free space or pass "
              "--out <writable dir>", file=sys.stderr)
        return 2


def make(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    """Build the table of ``args`` into its output directory, which ``held`` holds (tvlars.lock) meanwhile."""
    spec = load_spec(args.table)
    if args.profile == "smoke":
        spec = smoke_spec(spec, data_root="")
    out = Path(args.out or Path("results") / spec.name)
    source = args.source or str(default_source(spec.name, out))
    df = collect(source)
    mine = df[(df["table"] == spec.name) | (df["status"] == "corrupt")]
    ours = mine[mine["table"] == spec.name]
    if ours.empty and not args.allow_empty:
        raise UserError(f"{source} holds no run of table {spec.name}, so every cell would be '–'; run "
                        f"`make reproduce-table TABLE={spec.name}`, pass --source <runs dir>, or --allow-empty")
    if not ours["status"].isin(FINAL).any() and not args.allow_empty:
        failed = ours[ours["status"] == Status.failed.value]
        first = f" (first error: {failed['error'].iloc[0]})" if not failed.empty else ""
        raise UserError(f"none of the {len(ours)} run(s) of table {spec.name} in {source} finished{first}, so "
                        "no cell would have a number; fix the cause and rerun, or pass --allow-empty")
    held.enter_context(DirLock(out, f"table {spec.name}'s results directory"))
    archive.recover(out / "runs")
    local = not source.startswith(WANDB_PREFIX)
    in_place = local and Path(source).resolve() == (out / "runs").resolve()
    names = archive.record_names(mine["run_dir"]) if local else {}
    if not in_place:
        archive.check_replace(out / "runs", names, args.replace_records)
    kind = KINDS[spec.kind]
    table = kind.build(spec, df)
    written = []
    for name, text in table.files.items():
        write_atomic(out / name, text.encode())
        written.append(out / name)
    figures = kind.draw(spec, table, df, out)
    for stale in (out / name for name in DRAWN if out / name not in figures):
        stale.unlink(missing_ok=True)  # a figure of an older build that these records no longer support
    if not in_place:
        archive.copy_records(names, out / "runs")
    written.append(run_md.write(spec, df, out, source))
    count, size = archive.size(out / "runs")
    print(status_summary(spec, df))
    print(f"{len(table.problems)} problem(s)" + (" (listed under Problems below)" if table.problems else "") + "\n")
    print(table.markdown)
    print("wrote " + ", ".join(str(p) for p in [*written, *figures]))
    print(f"records: {count} run(s), {size / 1e6:.1f} MB in {out / 'runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
