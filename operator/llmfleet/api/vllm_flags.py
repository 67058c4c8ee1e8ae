"""vLLM 0.33.0's option strings for the flags the operator owns or that would break a pod; generated.

By hack/vllm_flags.py from vLLM's own argument definitions (aliases, EnableDisableAction's inverse and
--no- forms); tests/integration/test_vllm_conformance.py regenerates it from the fetched source and fails
on drift. Regenerate: python hack/vllm_flags.py $(bash hack/vllm-source.sh) --module > THIS FILE
"""

from __future__ import annotations

VLLM_VERSION = "0.33.0"

# dest -> every option string vllm serve takes for it (a positional has its own name)
OWNED: dict[str, tuple[str, ...]] = {
    "model_tag": ("model_tag",),
    "model": ("--model",),
    "served_model_name": ("--served-model-name",),
    "tensor_parallel_size": ("--tensor-parallel-size", "-tp",),
    "max_model_len": ("--max-model-len",),
    "enable_prefix_caching": ("--disable-prefix-caching", "--enable-prefix-caching", "--no-enable-prefix-caching",),
    "gpu_memory_utilization": ("--device-memory-utilization", "--gpu-memory-utilization",),
    "port": ("--port",),
    "host": ("--host",),
    "dtype": ("--dtype",),
    "quantization": ("--quantization", "-q",),
    "shutdown_timeout": ("--shutdown-timeout",),
    "enable_server_load_tracking": ("--disable-server-load-tracking", "--enable-server-load-tracking", "--no-enable-server-load-tracking",),
}

# dest -> (option strings, why it breaks the pod or the gateway)
BREAKING: dict[str, tuple[tuple[str, ...], str]] = {
    "uds": (("--uds",), "serves on a Unix socket: the Service, probes and gateways reach nothing"),
    "grpc": (("--grpc",), "serves gRPC instead of the OpenAI HTTP API the gateway speaks"),
    "grpc_port": (("--grpc-port",), "needs the Rust frontend the image does not run"),
    "headless": (("--headless",), "starts no API server at all"),
    "api_key": (("--api-key",), "makes the engine refuse the gateway's requests (the gateway holds the keys)"),
    "disable_log_stats": (("--disable-log-stats",), "turns off the metrics the autoscaler reads"),
    "config": (("--config",), "reads more flags from a file, owned ones included"),
    "root_path": (("--root-path",), "moves the API away from the paths the gateway and probes use"),
    "ssl_keyfile": (("--ssl-keyfile",), "serves HTTPS where the gateway and probes speak HTTP"),
    "ssl_certfile": (("--ssl-certfile",), "serves HTTPS where the gateway and probes speak HTTP"),
}
