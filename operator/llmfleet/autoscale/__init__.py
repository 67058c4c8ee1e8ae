"""The autoscaler: a pure policy (``policy``), the metrics it reads (``metrics``, Prometheus) and the per-CR
state the operator keeps between decisions (``loop``)."""
