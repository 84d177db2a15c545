"""Models: loading (hub id, local path, from config), LoRA, heads, the tiny default."""
