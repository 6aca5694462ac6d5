"""The table side: an experiment spec (``experiments/<table>.yaml``, :mod:`tvlars.tables.spec`, its model
:mod:`tvlars.tables.design`) → a plan of runs swept through Hydra with any launcher (:mod:`tvlars.tables.sweep`) →
the runs' records collected (:mod:`tvlars.tables.collect`) → the table of the spec's kind (:mod:`tvlars.tables.kinds`:
accuracy, scaling, LR window), its figures, ``RUN.md`` (:mod:`tvlars.tables.run_md`) and the records beside them
(:mod:`tvlars.tables.archive`), written by :mod:`tvlars.tables.build` (``make tables``);
:mod:`tvlars.tables.reproduce` (``make reproduce-table``) runs the whole chain and compares the result with the
committed table (:mod:`tvlars.tables.compare`).

What the kinds share: finding a cell's runs (:mod:`tvlars.tables.cells`), the text (:mod:`tvlars.tables.render`),
drawing (:mod:`tvlars.tables.figures`, :mod:`tvlars.tables.instrument_figures`) and the statistics
(:mod:`tvlars.tables.statistics`). Nothing here trains: the runs are ``python -m tvlars.train`` jobs. docs/tables.md
describes the rules.
"""
