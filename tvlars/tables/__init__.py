"""The table side: an experiment spec (``experiments/<table>.yaml``, :mod:`tvlars.tables.spec`) → a plan of runs
swept through Hydra with any launcher (:mod:`tvlars.tables.sweep`) → the runs' records collected
(:mod:`tvlars.tables.collect`) → the table, its figures, ``RUN.md`` and the records beside them
(:mod:`tvlars.tables.build`, ``make tables``); :mod:`tvlars.tables.reproduce` (``make reproduce-table``) runs the
whole chain and compares the result with the committed table (:mod:`tvlars.tables.compare`). Nothing here trains:
the runs are ``python -m tvlars.train`` jobs. docs/tables.md describes the rules.
"""
