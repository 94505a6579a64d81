"""`comfy.diffusers_convert` for plugins: loading a diffusers folder (the old home of load_diffusers).

The state-dict renaming functions (diffusers -> original names) are stand-ins: sdgraph loads either layout
itself and never needs the other.
"""
from __future__ import annotations

from sdgraph.comfy_layer import unsupported

from comfy.diffusers_load import load_diffusers  # noqa: F401 - older callers import it from here

unsupported.define(globals(), "converting diffusers state dicts to the original layout",
                   ("convert_unet_state_dict", "convert_vae_state_dict", "convert_text_enc_state_dict",
                    "convert_text_enc_state_dict_v20", "reshape_weight_for_sd"))
