"""din_fast: fast, faithful DIN, DeFiAN, CIRN and DRFN super-resolution on fused PyTorch ops."""

from din_fast import _extension  # noqa: F401  (load the C++ kernels before the ops register)
from din_fast import ops
from din_fast.backends import get_backend, set_backend, use_backend
from din_fast.deploy import export
from din_fast.inference import OptimizedModel, optimize, upscale
from din_fast.models import (CIRN, DIN, DRFN, CheckpointError, DeFiAN, SRModel, create_model, from_official,
                             list_models, load_model)

__version__ = "0.1.0"

__all__ = ["CIRN", "DIN", "DRFN", "CheckpointError", "DeFiAN", "OptimizedModel", "SRModel", "__version__",
           "create_model", "export", "from_official", "get_backend", "list_models", "load_model", "ops", "optimize",
           "set_backend", "upscale", "use_backend"]
