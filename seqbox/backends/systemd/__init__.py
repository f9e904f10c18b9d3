"""A delegated cgroup from the systemd user manager, for an unprivileged user."""
