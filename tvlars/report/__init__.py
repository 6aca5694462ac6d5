"""Paper tables and figures from run records: :func:`collect` → :func:`build_table` → :func:`write_figures`.

``tvlars.make_tables`` (``make tables TABLE=<name>``, ``tvlars-tables``) runs the three and writes ``table.md``,
``table.tex``, ``table.csv``, the PNG figures and the run records beside them (:mod:`tvlars.report.records`), and
``RUN.md`` from those records and the spec (:mod:`tvlars.report.run_md`); :mod:`tvlars.report.compare` compares a
reproduction with the committed table. Nothing here re-runs training or opens checkpoints. docs/tables.md describes
the rules.
"""

from tvlars.report.collect import collect
from tvlars.report.figures import write_figures
from tvlars.report.tables import Cell, Table, build_table, status_summary

__all__ = ["Cell", "Table", "build_table", "collect", "status_summary", "write_figures"]
