"""The sandbox boundary: the supervisor (this side) and the child process that runs a model."""
