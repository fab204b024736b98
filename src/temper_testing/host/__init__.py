"""Fakes beside the host ports, for tests: sysfs topology, kernel gate files and sched_ext state
(`fakesys`), pod cgroup trees (`fakecgroups`), and a scx_layered child with fault modes
(`fakescx`). They write the trees `temper.host`'s readers read under their root argument."""
