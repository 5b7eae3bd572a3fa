"""The service: one session (engine), the daemon, its status model, change
detection, the control socket, the configuration and logging."""
