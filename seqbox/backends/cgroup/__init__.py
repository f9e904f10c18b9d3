"""cgroup v1 and v2: the filesystem, the two backends, whose limit a kill was,
and what crashed runs leave behind."""
