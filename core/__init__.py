"""intriguing-lab engine: models, data, attacks and analyses for Szegedy et al. (ICLR 2014).

Importable without Streamlit; the dashboard is a thin view over this package.
"""

import os

# OpenMP threads that spin while waiting made every small step of an attack 10-80x slower on a 2-core machine
# with anything else running (0.6 ms -> 50 ms per forward+backward of fc100-100-10 on 90 images); passive
# waiting keeps both cores' benefit on large batches and loses almost nothing on small ones. It must be set
# before torch loads its OpenMP runtime, so here, ahead of any torch import; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from core.errors import IntriguingError  # noqa: E402

__all__ = ["IntriguingError"]
__version__ = "0.1.0"
