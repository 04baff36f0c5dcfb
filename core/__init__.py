"""intriguing-lab engine: models, data, attacks and analyses for Szegedy et al. (ICLR 2014).

Importable without Streamlit; the dashboard is a thin view over this package.
"""

from core.errors import IntriguingError

__all__ = ["IntriguingError"]
__version__ = "0.1.0"
