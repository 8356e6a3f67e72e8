"""Site fine-tuning: site datasets, the fine-tune recipe and training loop, durable jobs
and the worker process that runs them, production-versus-candidate evaluation on
held-out site cases, and the promotion gate; the built-in base models are trained here
too (`sitetune.training.base`).
"""
