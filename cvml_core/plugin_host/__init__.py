"""The plugin host: the hooks a plugin may implement, the entry point loader and the
registry that find callbacks and plugins by name, and the :class:`RunInfo` the run hooks
receive."""
