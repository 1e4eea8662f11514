"""Run configs, one file per recipe: `get_config(arg)` (installed as `contrastive.configs`)."""
