"""The node agent: the single composition root that wires pod sources, planner and supervisor."""
