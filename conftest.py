"""Settings for every test, notebooks included: the quick profile and a non-interactive matplotlib backend.

They are environment variables, so the Jupyter kernels that nbval starts for the notebooks inherit them.
"""

import os

os.environ.setdefault("FTCOURSE_PROFILE", "quick")
os.environ.setdefault("MPLBACKEND", "Agg")
