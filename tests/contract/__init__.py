"""Contract suites: tests any implementation of a port must pass (subclass and supply it)."""
