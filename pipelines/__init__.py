"""Per-pair analysis stages and the Beam pipelines that wrap them."""

import warnings

# google-api-core warns on every import that Python 3.11 support ends in 2027; Beam's
# GCS filesystem imports it in every run.  Nothing for a facext user to act on.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\._python_version_support")
