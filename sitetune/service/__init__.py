"""The HTTP surface (BentoML + FastAPI routes). Nothing imports this package."""
