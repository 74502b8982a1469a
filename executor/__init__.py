"""Executor stage: swaps each routed order on its chosen venue and records the outcome."""
