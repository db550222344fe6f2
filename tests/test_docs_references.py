"""Every repository file the documentation names exists.

README.md and docs/*.md name scripts, benchmarks, examples and modules (`scripts/demo.py`,
[docs/reuse.md](docs/reuse.md), `operators/resolve.py`...). A renamed or deleted file leaves the docs
pointing at nothing; this test reads the docs (pure file reads, no subprocess) and checks three kinds of
reference:

- a path starting with a top-level folder of the repository (``scripts/``, ``docs/``, ``benchmarks/``,
  ``dags_examples/``, ``deploy/``, ``airflow_mlpipe/``, ``tests/``, ``.ci/``), anywhere in the text, code
  blocks included: it must exist below the repository root;
- a relative Markdown link target: it must exist relative to the document, inside the repository;
- an inline code span holding a relative file path (``compute/reaper.py``, ``../x/y.md``): it must exist
  relative to the repository root, the document's folder or the package ``airflow_mlpipe/``, inside the
  repository.

Placeholders (``<step>``, ``{pipeline}``, ``NAME``, ``*``, ``...``) mark workspace layouts and examples, not files,
and are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "airflow_mlpipe"
TOP_DIRS = ("scripts", "docs", "benchmarks", "dags_examples", "deploy", "airflow_mlpipe", "tests", ".ci")
FILE_SUFFIXES = (".py", ".md", ".sh", ".yaml", ".yml", ".toml", ".txt", ".json", ".cfg", ".ini")

# a path that starts with a top-level folder; not preceded by a path character (so `/tmp/x/scripts/y` or
# `.demo/docs/` do not count)
_TOP_PATH = re.compile(
    r"(?<![\w./~-])(?:" + "|".join(re.escape(d) for d in TOP_DIRS) + r")/[\w./-]*"
)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
#: capitalised stand-ins used in examples (`benchmarks/NAME.py`); README.md or DESIGN.md are real names
PLACEHOLDER_WORDS = frozenset({"NAME", "FILE", "PATH", "DIR", "STEP", "PIPELINE", "RUN_ID", "N", "X"})


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _is_placeholder(path: str) -> bool:
    if any(ch in path for ch in "<>{}*?[]$") or "..." in path:
        return True
    return any(part.split(".")[0] in PLACEHOLDER_WORDS for part in path.split("/") if part)


def _inside_repo(path: Path) -> bool:
    try:
        path.resolve().relative_to(ROOT)
    except ValueError:
        return False
    return True


def _exists(candidate: Path) -> bool:
    return _inside_repo(candidate) and candidate.exists()


def references(text: str) -> list[tuple[str, str]]:
    """``(kind, path)`` of every repository reference in a document's ``text``."""
    refs: list[tuple[str, str]] = []
    for match in _TOP_PATH.finditer(text):
        path = match.group(0).rstrip(".")
        if not _is_placeholder(path) and not text.startswith(("<", "{", "*"), match.end()):
            refs.append(("top", path))
    for match in _LINK.finditer(text):
        target = match.group(1).split("#", 1)[0]
        if target and not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("/"):
            refs.append(("link", target))
    for match in _CODE_SPAN.finditer(text):
        span = match.group(1).strip()
        if (
            "/" in span
            and span.endswith(FILE_SUFFIXES)
            and not re.search(r"\s|:", span)
            and not span.startswith(("/", "~"))
            and not _is_placeholder(span)
        ):
            refs.append(("span", span))
    return refs


def missing(doc: Path, text: str) -> list[str]:
    """The references of ``text`` (the content of ``doc``) that name no file or folder of the repository."""
    out: list[str] = []
    reported: set[str] = set()
    for kind, path in references(text):
        if path in reported:
            continue
        if kind == "top":
            found = _exists(ROOT / path)
        elif kind == "link":
            found = _exists(doc.parent / path)
        else:
            found = any(_exists(base / path) for base in (ROOT, doc.parent, PACKAGE))
        if not found:
            reported.add(path)
            out.append(f"{doc.relative_to(ROOT)}: {kind} reference {path!r} names no file of the repository")
    return out


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_referenced_file_exists(doc: Path) -> None:
    problems = missing(doc, doc.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_the_docs_name_files() -> None:
    """The scan finds the references the docs are known to hold (it is not vacuous)."""
    found = {path for doc in documents() for _, path in references(doc.read_text(encoding="utf-8"))}
    assert {"scripts/distributed.py", "docs/yaml-reference.md", "benchmarks/reuse_verify.py",
            "dags_examples/pipelines/income_retrain.yaml", "operators/resolve.py"} <= found


@pytest.mark.parametrize(
    "text",
    [
        "run `scripts/no_such_script.py` first",
        "see [the guide](docs/no-such-page.md#intro)",
        "the design is in `../shared/DESIGN.md`",
        "```\npython benchmarks/nothing_here.py\n```",
        "written by `workspace/no_such_module.py`",
        "deploy with deploy/helm/values.yaml.",
    ],
)
def test_a_missing_file_is_reported(text: str) -> None:
    assert missing(ROOT / "README.md", text)


@pytest.mark.parametrize(
    "text",
    [
        "`runs/<pipeline>/<run_id>/run.json`",
        "`outputs/{pipeline}/{run_id}/{step}/{output}`",
        "python benchmarks/NAME.py",
        "`<dags>/pipelines/NAME.yaml`",
        "`file:///srv/ws`, `s3://bucket/prefix`",
        "a local workspace in `.demo/` and /tmp/demoC/.demo/workspace/outputs/x/prep",
        "[the API](https://airflow.apache.org/docs/x.md)",
    ],
)
def test_placeholders_and_urls_are_not_files(text: str) -> None:
    assert missing(ROOT / "README.md", text) == []
