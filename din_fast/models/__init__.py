"""The networks: DIN (journal and IJCAI code, and the restoration variants), DeFiAN (S and L), CIRN,
DRFN, and their registry and loaders."""

from din_fast.models.blocks import SRModel
from din_fast.models.cirn import CIRN
from din_fast.models.defian import DeFiAN
from din_fast.models.din import DIN, DINRestoration
from din_fast.models.drfn import DRFN
from din_fast.models.native import load_model, save_model
from din_fast.models.official import CheckpointError, from_official
from din_fast.models.registry import create_model, list_models

__all__ = ["CIRN", "DIN", "DINRestoration", "DRFN", "CheckpointError", "DeFiAN", "SRModel", "create_model",
           "from_official", "list_models", "load_model", "save_model"]
