"""The plugin host: the hooks, loading plugins, finding callbacks by name, and the
:class:`RunInfo` the run hooks receive."""
