"""The kinds of table a spec can ask for (``kind:``), one module each."""
