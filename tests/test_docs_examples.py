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


# -- the code the docs name: kept true mechanically where a drift is cheap to see ---------------------------

DOCS = ("README.md", *sorted(f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")))
CODE_PATH = re.compile(r"\b((?:planner|executors|sqlsecure|connectors|bench|tests|examples)/[\w/.-]*\w)(\*?)")
FILE_THEN_NAME = re.compile(r"`((?:planner|executors|sqlsecure|connectors|bench|tests)/[\w/]+\.py)`[\s,(:]{1,6}`(\w+)(?:\(\))?`")
NAME_IN_FILE = re.compile(r"`(\w+)(?:\(\))?`,?\s+(?:in\s+)?`((?:planner|executors|sqlsecure|connectors|bench|tests)/[\w/]+\.py)`")


def doc_text(document: str) -> str:
    return (ROOT / document).read_text(encoding="utf-8")


def mentions(path: Path, name: str) -> bool:
    return path.is_file() and re.search(rf"\b{re.escape(name)}\b", path.read_text(encoding="utf-8")) is not None


def is_in_checkout(named: str) -> bool:
    """A file or folder, or `folder/module.attribute` whose module mentions the attribute."""
    module, _, attribute = named.rpartition(".")
    return (ROOT / named).exists() or bool(module) and mentions(ROOT / f"{module}.py", attribute)


def test_every_code_path_the_docs_name_exists():
    """`planner/place_spu.py`, `executors/spu/program.approximate_columns`: moved or renamed code shows here
    (history in docs/benchmarks.md names the old place as "then in ..., now ...")."""
    missing = [(document, named) for document in DOCS for named, glob in CODE_PATH.findall(doc_text(document))
               if not glob and not is_in_checkout(named)]
    assert not missing


def test_a_function_named_beside_its_file_is_in_that_file():
    """"`planner/place_psi.py` `known_unique`" and "`known_unique` in `planner/place_psi.py`"."""
    pairs = [(document, path, name) for document in DOCS for pattern in (FILE_THEN_NAME, NAME_IN_FILE)
             for found in pattern.findall(doc_text(document))
             for path, name in [found if pattern is FILE_THEN_NAME else found[::-1]]]
    assert pairs
    assert not [pair for pair in pairs if not mentions(ROOT / pair[1], pair[2])]


def documented_section(document: str, heading: str) -> str:
    text = doc_text(document)
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def test_the_dialect_rules_are_the_ones_documented():
    """docs/federation.md's Dialects section names every rule of each dialect's RULES, and its tables name
    no rule that does not exist."""
    from sqlsecure.planner.dialects import mysql, postgres

    section = documented_section("docs/federation.md", "Dialects")
    rules = {rule.__name__ for dialect in (mysql, postgres) for rule in dialect.RULES}
    assert not {rule for rule in rules if f"`{rule}`" not in section}
    assert not set(re.findall(r"^\| `(\w+)` \|", section, re.M)) - rules


def test_the_federation_keys_are_the_ones_documented():
    """Every key the federation file accepts is in docs/federation.md, and every `federation.KEY` /
    `parties.NAME.KEY` the docs name is one the file accepts."""
    from sqlsecure import federation
    from sqlsecure.policy import masking, privacy, rules

    text = doc_text("docs/federation.md")
    named = {f"federation.{key}" for key in federation.FEDERATION_KEYS} | {
        f"parties.NAME.{key}" for key in federation.PARTY_KEYS}
    assert not {key for key in named if not re.search(rf"`\[?{re.escape(key)}\b", text)}
    spans = " ".join(re.findall(r"`([^`\n]+)`", text))
    others = (federation.GRANT_KEYS | federation.ENCLAVE_KEYS | privacy.PRIVACY_KEYS | rules.RULE_KEYS
              | masking.MASK_KEYS | federation.TOP_KEYS)
    assert not {key for key in others if not re.search(rf"\b{key}\b", spans)}
    every = "".join(doc_text(document) for document in DOCS)
    assert set(re.findall(r"`federation\.(\w+)`", every)) <= federation.FEDERATION_KEYS
    assert set(re.findall(r"`\[?parties\.NAME\.(\w+)", every)) <= federation.PARTY_KEYS


def test_the_readme_test_command_is_what_ci_runs():
    """The README's test command is a line of .ci/run, which runs exactly it."""
    fenced = [line for language, code in FENCE.findall(doc_text("README.md")) if language == "sh"
              for line in code.splitlines() if "pytest" in line]
    assert fenced and set(fenced) <= set((ROOT / ".ci/run").read_text(encoding="utf-8").splitlines())


def test_the_plan_steps_and_rewrite_rules_are_the_ones_documented():
    """docs/design.md lists every step a physical plan may hold; docs/architecture.md every rewrite rule."""
    from sqlsecure.planner import physical, rules

    steps = {name for name, cls in vars(physical).items() if isinstance(cls, type) and issubclass(cls, physical.Step)
             and cls.__subclasses__() == [] and cls.__module__ == physical.__name__}
    assert not {step for step in steps if f"`{step}`" not in doc_text("docs/design.md")}
    assert not {rule.__name__ for rule in rules.RULES if f"`{rule.__name__}`" not in doc_text("docs/architecture.md")}
