"""Integrations with other tools' model loaders (``din_fast.integrations.spandrel``: chaiNNer, ComfyUI).

Each submodule needs its tool's package and is imported explicitly; importing din_fast imports none."""
