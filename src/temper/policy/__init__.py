"""The pure policy core: tiers, pods, machine shape, workload profiles and the planner.

Nothing in this package reads the host, the clock or the network (an import-linter contract
holds it to that); every input arrives as a value and every output is a value.
"""
