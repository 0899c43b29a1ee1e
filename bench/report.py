"""BENCHMARKS.md, rendered from the results the benchmarks wrote: figures cannot drift from
their JSON.

    python -m bench.report           # rewrite BENCHMARKS.md from bench/benchmarks.md.in
    python -m bench.report --check   # exit 1 if BENCHMARKS.md is not what the JSON renders

The template is Markdown with `{{ expression }}` or `{{ expression | format }}` fields. An
expression reads the JSON files under `bench/results/` by their stem (`engine`, `serve`,
...; a stem with a dash is read with its dash as an underscore, `interactive_quick`), with
attribute access for keys that are names and `["..."]` for the others, and the helpers
below (`mib`, `ratio`, ...); the format is a Python format spec (`.1f`, `,d`). Nothing else
is evaluated: no imports, no builtins but those listed. An expression cannot hold a `|`
(the format's separator) nor `}}`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "bench" / "results"
TEMPLATE = ROOT / "bench" / "benchmarks.md.in"
OUTPUT = ROOT / "BENCHMARKS.md"
FIELD = re.compile(r"\{\{(.+?)\}\}", re.S)


class Results(dict):
    """A JSON object whose keys read as attributes too (`serve.click_by_id.ours`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return Results({k: _wrap(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


HELPERS = {
    "mib": lambda n: n / 2**20,
    "gib": lambda n: n / 2**30,
    "ratio": lambda a, b: a / b,
    "min": min,
    "max": max,
    "sum": sum,
    "len": len,
    "round": round,
    "abs": abs,
    "all": all,
}


def load_results(results: Path = RESULTS) -> dict[str, Any]:
    return {
        path.stem.replace("-", "_"): _wrap(json.loads(path.read_text()))
        for path in sorted(results.glob("*.json"))
    }


def render(template: str, results: dict[str, Any]) -> str:
    # Globals, not locals: a generator expression in a field sees globals only.
    names = {**results, **HELPERS, "__builtins__": {}}

    def field(match: re.Match[str]) -> str:
        expression, _, spec = match.group(1).partition("|")
        try:
            value = eval(expression.strip(), names)
        except Exception as error:
            raise ValueError(f"{{{{{match.group(1)}}}}}: {error!r}") from error
        return format(value, spec.strip())

    return FIELD.sub(field, template)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render(TEMPLATE.read_text(), load_results())
    if args.check:
        if OUTPUT.read_text() != text:
            print("BENCHMARKS.md is not what bench/results renders: python -m bench.report")
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
