"""Every query the docs show runs on the demo federation (`sqlsecure demo`): each is answered as the issuer
the example names, the same as plain DuckDB over all parties' data."""

import ast
import re
import shlex
from pathlib import Path

import pytest

from sqlsecure.demo import write_demo
from sqlsecure.engine import Engine
from sqlsecure.planner.parse import bind_parameters, parse_statement

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/network.md", "sqlsecure/flight_sql/README.md")
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
RUNS_SQL = ("execute", "explain")
SQL_COMMANDS = ("query", "explain", "check")


def python_examples(code: str):
    """(sql, parameters) of each `x.execute(...)` / `x.explain(...)` call with literal arguments."""
    for call in ast.walk(ast.parse(code)):
        if isinstance(call, ast.Call) and getattr(call.func, "attr", None) in RUNS_SQL and call.args:
            try:
                values = [ast.literal_eval(arg) for arg in call.args]
            except ValueError:
                continue
            if isinstance(values[0], str) and values[0].lstrip().upper().startswith("SELECT"):
                yield values[0], values[1] if len(values) > 1 and isinstance(values[1], (tuple, list)) else None


def shell_examples(code: str):
    """(sql, None) of each `sqlsecure [party] query|explain|check ... "SQL"` line whose SQL is complete."""
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True) if line.lstrip().startswith("sqlsecure") else []
        if set(words) & set(SQL_COMMANDS) and words[-1].upper().startswith("SELECT") and "..." not in words[-1]:
            yield words[-1], None


def documented_queries():
    found = []
    for document in DOCUMENTS:
        for language, code in FENCE.findall((ROOT / document).read_text(encoding="utf-8")):
            examples = python_examples(code) if language == "python" else shell_examples(code) \
                if language in ("sh", "bash", "") else ()
            found += [pytest.param(sql, params, id=f"{document}:{sql[:40]}") for sql, params in examples]
    return found


@pytest.fixture(scope="module")
def demo_engine(tmp_path_factory):
    with Engine(write_demo(tmp_path_factory.mktemp("demo"), customers=300)) as engine:
        yield engine


def test_the_docs_show_queries():
    documents = {p.id.split(":")[0] for p in documented_queries()}
    assert documents == set(DOCUMENTS)


@pytest.mark.parametrize("sql, parameters", documented_queries())
def test_documented_query_runs_on_the_demo(demo_engine, oracle_for, sql, parameters):
    """Answered as the oracle answers it (`?` markers bound as the engine binds them)."""
    dialect = demo_engine.config.dialect
    bound = bind_parameters(parse_statement(sql, dialect), parameters).sql(dialect=dialect)
    assert oracle_for(demo_engine).check(bound, "bank").num_rows > 0


CITED_DOC = re.compile(r"\b((?:docs|sqlsecure/flight_sql)/[\w./-]+\.md)\b")


def project_texts():
    """Every source, test and document of the project (not the virtualenv or build output)."""
    for path in ROOT.rglob("*"):
        parts = set(path.relative_to(ROOT).parts)
        if path.suffix in (".py", ".md") and not parts & {".venv", "build", "sqlsecure.egg-info", ".git"}:
            yield path, path.read_text(encoding="utf-8", errors="replace")


def test_every_cited_document_exists():
    """The design is docs/design.md: nothing cites a DESIGN.md, and every docs/*.md cited is there."""
    texts = list(project_texts())
    assert not [str(path) for path, text in texts if "DESIGN.md" in text and path != Path(__file__).resolve()]
    missing = {(str(path.relative_to(ROOT)), doc) for path, text in texts for doc in CITED_DOC.findall(text)
               if not (ROOT / doc).exists()}
    assert not missing
    assert {"The devices", "How a query flows", "Security model", "Policy vocabulary", "The test oracle"} <= set(
        re.findall(r"^## (.+)$", (ROOT / "docs/design.md").read_text(encoding="utf-8"), re.M))
