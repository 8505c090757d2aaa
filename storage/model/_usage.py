"""Token usage aggregation shared by every backend.

A backend selects the usage rows of a thread (and of finished tasks, and of
one user, as asked); this turns them into the run store's figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: (task_id, model, caller, input_tokens, output_tokens)
UsageRow = tuple[str, str, str | None, int, int]


def aggregate_usage(rows: Iterable[UsageRow]) -> dict[str, Any]:
    """total_tokens, total_input_tokens, total_output_tokens, total_runs
    (distinct tasks), by_model ({model: {"tokens", "runs"}}) and by_caller
    ({caller: tokens}; a report without a caller counts as "unknown")."""
    total_input = total_output = 0
    tasks: set[str] = set()
    model_tokens: dict[str, int] = {}
    model_tasks: dict[str, set[str]] = {}
    by_caller: dict[str, int] = {}
    for task_id, model, caller, input_tokens, output_tokens in rows:
        tokens = input_tokens + output_tokens
        total_input += input_tokens
        total_output += output_tokens
        tasks.add(task_id)
        model_tokens[model] = model_tokens.get(model, 0) + tokens
        model_tasks.setdefault(model, set()).add(task_id)
        caller_name = caller if caller is not None else "unknown"
        by_caller[caller_name] = by_caller.get(caller_name, 0) + tokens
    return {
        "total_tokens": total_input + total_output,
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "total_runs": len(tasks),
        "by_model": {
            model: {"tokens": tokens, "runs": len(model_tasks[model])}
            for model, tokens in model_tokens.items()
        },
        "by_caller": by_caller,
    }
