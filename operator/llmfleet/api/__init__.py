"""The LLMDeployment API: models, catalogs, sizing and CRD generation (pure, no I/O)."""
