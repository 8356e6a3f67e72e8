"""sitetune: serve, measure and site-fine-tune medical image segmentation models."""

__version__ = "0.1.0"
