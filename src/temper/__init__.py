"""Temper: five-tier CPU isolation for Kubernetes nodes, enforced by sched_ext and scx_layered."""

__version__ = "0.1.0"
