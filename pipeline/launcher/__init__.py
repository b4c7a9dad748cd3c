"""The pod launcher: one worker pod per Kubernetes task request, created durably, once."""
