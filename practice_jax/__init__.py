"""practice_jax: classic deep-learning experiments in JAX/Flax Linen, one config each."""

__version__ = "0.1.0"
