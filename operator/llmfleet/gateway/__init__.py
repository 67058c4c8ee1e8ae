"""The OpenAI-compatible streaming gateway: auth, per-key limits, sensitivity routing, replica routing, telemetry."""
