"""vLLM's own code as the judge, run inside the vLLM venv (hack/vllm-venv.sh), never in llmfleet's.

Reads one JSON object a line on stdin and answers each with one line on stdout (a long-lived judge: vLLM
takes seconds to import):

- ``argv``: a list of argument vectors (what follows ``vllm serve``). Each is parsed by vLLM's own
  ``vllm serve`` parser (``make_arg_parser(FlexibleArgumentParser())``: aliases, underscores, prefixes,
  ``--config`` and all) and answered with ``{"ok": {dest: value}}`` for the dests asked in ``dests``, or
  ``{"error": message}`` when vLLM refuses the vector.
- ``responses``: a list of ``{"kind": KIND, "body": object}`` with KIND one of ``chat``, ``chat_chunk``,
  ``completion``, ``completion_chunk``, ``error``; each is validated by vLLM's pydantic protocol model of that
  kind and answered with a list of problems: pydantic's errors, plus every key vLLM's model does not declare
  (vLLM's models allow extra keys, so pydantic alone would not see them).

Run by tests/integration/test_vllm_conformance.py with VLLM_TARGET_DEVICE=cpu (no GPU needed).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return repr(v)


def parse(argvs: list[list[str]], dests: list[str]) -> list[dict[str, Any]]:
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))  # argparse keeps no state per parse
    out = []
    for argv in argvs:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                ns = parser.parse_args(argv)
        except SystemExit:
            out.append({"error": err.getvalue().strip().splitlines()[-1:] or ["refused"]})
            continue
        except Exception as exc:  # vLLM's own checks (e.g. a --config file that is not there)
            out.append({"error": [f"{type(exc).__name__}: {exc}"]})
            continue
        out.append({"ok": {d: _jsonable(getattr(ns, d, None)) for d in dests}})
    return out


def _undeclared(model: Any, path: str = "") -> list[str]:
    """Keys vLLM's models do not declare, anywhere in the validated tree."""
    from pydantic import BaseModel

    found: list[str] = []
    if isinstance(model, BaseModel):
        for key in model.model_extra or {}:
            found.append(f"{path}{key}: not a field of vLLM's {type(model).__name__}")
        for name in type(model).model_fields:
            found += _undeclared(getattr(model, name), f"{path}{name}.")
    elif isinstance(model, (list, tuple)):
        for i, x in enumerate(model):
            found += _undeclared(x, f"{path}{i}.")
    return found


def validate(responses: list[dict[str, Any]]) -> list[list[str]]:
    from pydantic import ValidationError
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionResponse,
        ChatCompletionStreamResponse,
    )
    from vllm.entrypoints.openai.completion.protocol import CompletionResponse, CompletionStreamResponse
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse

    models = {
        "chat": ChatCompletionResponse,
        "chat_chunk": ChatCompletionStreamResponse,
        "completion": CompletionResponse,
        "completion_chunk": CompletionStreamResponse,
        "error": ErrorResponse,
    }
    out = []
    for r in responses:
        try:
            m = models[r["kind"]].model_validate(r["body"])
        except ValidationError as exc:
            out.append([f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()])
            continue
        out.append(_undeclared(m))
    return out


def answer(req: dict[str, Any]) -> dict[str, Any]:
    import vllm

    return {
        "version": vllm.__version__,
        "argv": parse(req.get("argv", []), req.get("dests", [])),
        "responses": validate(req.get("responses", [])),
    }


def main() -> None:
    out = sys.stdout
    # vLLM logs to stdout; keep stdout for the answers.
    with contextlib.redirect_stdout(sys.stderr):
        for line in sys.stdin:
            if line.strip():
                out.write(json.dumps(answer(json.loads(line))) + "\n")
                out.flush()


if __name__ == "__main__":
    main()
