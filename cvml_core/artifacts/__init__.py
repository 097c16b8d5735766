"""The artifact lifecycle: a callback's snapshot, background write, publish and record of
its files, and where they live (the modules: docs/development.md)."""
