"""The HTTP side: the route table, the handlers, the probes, /admin, the process's phase."""
