"""The `temper` command line: composes the host adapters and the policy core for operators."""
