"""The option strings `vllm serve` accepts, read from vLLM's own source (no import: no torch needed).

    python hack/vllm_flags.py SRC          # JSON: {dest: [option strings]} for every vllm serve option
    python hack/vllm_flags.py SRC --module # the generated operator/llmfleet/api/vllm_flags.py

SRC is what hack/vllm-source.sh prints. Sources of options: every ``add_argument`` call with literal option
strings in ``vllm/engine/arg_utils.py`` and ``vllm/entrypoints/common/cli_args.py`` (aliases such as ``-tp``
included), and the fields of the frontend dataclasses (``BaseFrontendArgs``, ``FrontendArgs``), which
``add_cli_args`` turns into ``--field-name``. FlexibleArgumentParser registers its EnableDisableAction for
every boolean option: ``--X`` also has ``--no-X``, and ``--enable-X``/``--disable-X`` are each other's inverse
(vllm/utils/argparse_utils.py); booleans are the options whose field or default says bool.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

# What the operator renders itself (extraArgs may not set it), and what would break the pod or the gateway.
OWNED = (
    "model_tag",
    "model",
    "served_model_name",
    "tensor_parallel_size",
    "max_model_len",
    "enable_prefix_caching",
    "gpu_memory_utilization",
    "port",
    "host",
    "dtype",
    "quantization",
    "shutdown_timeout",
    "enable_server_load_tracking",
)
BREAKING = {
    "uds": "serves on a Unix socket: the Service, probes and gateways reach nothing",
    "grpc": "serves gRPC instead of the OpenAI HTTP API the gateway speaks",
    "grpc_port": "needs the Rust frontend the image does not run",
    "headless": "starts no API server at all",
    "api_key": "makes the engine refuse the gateway's requests (the gateway holds the keys)",
    "disable_log_stats": "turns off the metrics the autoscaler reads",
    "config": "reads more flags from a file, owned ones included",
    "root_path": "moves the API away from the paths the gateway and probes use",
    "ssl_keyfile": "serves HTTPS where the gateway and probes speak HTTP",
    "ssl_certfile": "serves HTTPS where the gateway and probes speak HTTP",
}
FILES = ("vllm/engine/arg_utils.py", "vllm/entrypoints/common/cli_args.py")
FRONTEND_CLASSES = ("BaseFrontendArgs", "FrontendArgs")


def _is_bool(node: ast.AST | None) -> bool:
    return node is not None and "bool" in ast.unparse(node)


def options(src: Path) -> dict[str, set[str]]:  # noqa: C901 - one pass over vLLM's argparse calls
    """dest → every option string vllm serve accepts for it."""
    out: dict[str, set[str]] = {}
    bools: set[str] = set()
    plain: set[str] = set()  # store_true options: no --no- form
    for rel in FILES:
        tree = ast.parse((src / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name in FRONTEND_CLASSES:
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        name = item.target.id
                        out.setdefault(name, set()).add("--" + name.replace("_", "-"))
                        if _is_bool(item.annotation):
                            bools.add(name)
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and _is_bool(node.annotation)
            ):
                bools.add(node.target.id)  # EngineArgs' own dataclass fields
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"
            ):
                continue
            strings = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            flags = [s for s in strings if s.startswith("-")]
            if strings and not flags:  # a positional: vllm serve MODEL
                out.setdefault(strings[0], set()).add(strings[0])
                continue
            longs = [f for f in flags if f.startswith("--")]
            if not longs:
                continue
            dest = longs[0][2:].replace("-", "_")
            out.setdefault(dest, set()).update(flags)
            for kw in node.keywords:
                if kw.arg == "action" and "Boolean" in ast.unparse(kw.value):  # store_true has no --no- form
                    bools.add(dest)
                if kw.arg == "action" and "store_true" in ast.unparse(kw.value):
                    bools.discard(dest)
                    plain.add(dest)
    for dest in (bools - plain) & out.keys():
        for flag in list(out[dest]):
            if flag.startswith("--") and not flag.startswith("--no-"):
                out[dest].add("--no-" + flag[2:])
                for prefix, inverse in (("--enable-", "--disable-"), ("--disable-", "--enable-")):
                    if flag.startswith(prefix):
                        out[dest].add(inverse + flag[len(prefix) :])
    return out


def module(src: Path, version: str) -> str:
    found = options(src)
    missing = [d for d in (*OWNED, *BREAKING) if d not in found]
    if missing:
        raise SystemExit(f"vLLM {version} has no option for {missing}: update hack/vllm_flags.py")
    owned = {d: sorted(found[d]) for d in OWNED}
    breaking = {d: sorted(found[d]) for d in BREAKING}
    lines = [
        f'"""vLLM {version}\'s option strings for the flags the operator owns or that would break a pod; generated.',
        "",
        "By hack/vllm_flags.py from vLLM's own argument definitions (aliases, EnableDisableAction's inverse and",
        "--no- forms); tests/integration/test_vllm_conformance.py regenerates it from the fetched source and fails",
        "on drift. Regenerate: python hack/vllm_flags.py $(bash hack/vllm-source.sh) --module > THIS FILE",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        f'VLLM_VERSION = "{version}"',
        "",
        "# dest -> every option string vllm serve takes for it (a positional has its own name)",
        "OWNED: dict[str, tuple[str, ...]] = {",
        *(f'    "{d}": ({", ".join(json.dumps(f) for f in fs)},),' for d, fs in owned.items()),
        "}",
        "",
        "# dest -> (option strings, why it breaks the pod or the gateway)",
        "BREAKING: dict[str, tuple[tuple[str, ...], str]] = {",
        *(
            f'    "{d}": (({", ".join(json.dumps(f) for f in fs)},), {json.dumps(BREAKING[d])}),'
            for d, fs in breaking.items()
        ),
        "}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    src = Path(sys.argv[1])
    if "--module" in sys.argv:
        print(module(src, src.name), end="")
    else:
        print(json.dumps({d: sorted(fs) for d, fs in sorted(options(src).items())}, indent=1))


if __name__ == "__main__":
    main()
