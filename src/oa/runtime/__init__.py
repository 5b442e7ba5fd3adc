"""The runtime: the authority for runs, their events, workers, policy, spend and replay."""
