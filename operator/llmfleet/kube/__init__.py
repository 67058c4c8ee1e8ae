"""The only door to the Kubernetes API: a narrow port (KubePort) over the official client, plus a fake for tests."""
