"""Host adapters: read the machine's `/sys` and `/proc`, write configs and run processes.

Every reader takes the host's root directory as an argument and reads the host under it, never
a global path: the agent passes `--host-root` (the node's `/` mounted into its container), and
tests pass a small fake tree written beside them (see `temper_testing.host.fakesys`).
"""
