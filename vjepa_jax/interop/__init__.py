"""PyTorch interop: official names and layouts, AdamW state mapping, torch and safetensors files."""
