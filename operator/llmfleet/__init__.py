"""llmfleet: a Kubernetes operator for LLM serving fleets."""

# The one source of the version: pyproject.toml reads it, the default gateway image is tagged with it, hack/gen.sh
# writes it into the chart, and tests/unit/test_version.py checks the README, the Dockerfile and the CHANGELOG.
__version__ = "0.1.0"
