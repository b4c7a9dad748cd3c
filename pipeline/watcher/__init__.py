"""The pod watcher: observes the launcher's pods and publishes what happens to their tasks."""
