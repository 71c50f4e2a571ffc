"""Inference: running the trained networks on users' images (image IO, devices, tiling, upscaling, face editing)."""
