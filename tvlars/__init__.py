"""tvlars: large-batch training research harness (TVLARS, LARS, LAMB, LAMBC, AutoWU, CDAT)."""

__version__ = "0.1.0"
