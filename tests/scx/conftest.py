"""The scx tier: runs the real, pinned scx_layered binary (no sched_ext kernel needed).

Its `scx_layered` fixture lives in tests/conftest.py, shared with the lab tier.
"""
