"""Configuration: the typed schemas of every group, the axis options, Hydra composition and its errors.

Imported by every command before any work starts; nothing here imports torch.
"""
