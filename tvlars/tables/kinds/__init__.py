"""The kinds of table a spec can ask for (``kind:``), one :class:`~tvlars.tables.kinds.base.TableKind` each.

Adding a kind is one module here and one entry in :data:`KINDS` (docs/extending.md shows one).
"""

from tvlars.tables.kinds.accuracy import ACCURACY
from tvlars.tables.kinds.base import TableKind
from tvlars.tables.kinds.lr_window import LR_WINDOW
from tvlars.tables.kinds.scaling import SCALING

KINDS: dict[str, TableKind] = {kind.name: kind for kind in (ACCURACY, SCALING, LR_WINDOW)}
"""Every kind by its name, the first the default of a spec without ``kind:``."""
