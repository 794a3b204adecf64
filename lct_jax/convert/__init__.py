"""diffusers HunyuanVideo weights <-> lct-jax params (docs/design.md section 11).

  config_from_diffusers(config.json dict)   -> lct-jax config
  import_state_dict(state_dict, config)     -> params (pure dict)
  export_state_dict(params, config)         -> diffusers state dict
  load_folder / save_folder                 local diffusers model folders
  save_params / load_params                 the orbax checkpoint that
                                            `train.init_from` points at
CLI: `python -m lct_jax.convert import|export ...` (see `__main__.py`).
"""
from lct_jax.convert.checkpoint import load_config, load_params, save_params
from lct_jax.convert.folder import load_folder, save_folder
from lct_jax.convert.hunyuan import (abstract_params, config_from_diffusers,
                                     diffusers_config, diffusers_key,
                                     export_state_dict, import_state_dict)
