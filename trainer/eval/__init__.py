"""Evaluation: the FID Inception (plain torch), streaming Fréchet distance, ScaleInv FID."""
