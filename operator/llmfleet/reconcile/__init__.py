"""Reconciliation of LLMDeployments: kopf handlers (thin), observe, plan (pure), status (pure), apply (SSA + prune)."""
