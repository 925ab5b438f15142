"""The README stays a front door (at most 200 lines) and docs/ holds the
rest: every relative link in README.md and docs/**/*.md reaches a file that
exists (and a heading that exists, when it names one), and the state
machines in docs/architecture/ name every state of the enums they draw."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

# The repository root, wherever in tests/ this file lives.
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").rglob("*.md"))]
README_MAX_LINES = 200

CODE_BLOCK = re.compile(r"^```.*?^```", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def links(document: Path) -> list[str]:
    text = INLINE_CODE.sub("", CODE_BLOCK.sub("", document.read_text()))
    return LINK.findall(text)


def relative(target: str) -> bool:
    return not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: ...


def heading_anchors(document: Path) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = CODE_BLOCK.sub("", document.read_text())
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_the_readme_has_at_most_200_lines() -> None:
    assert len(README.read_text().splitlines()) <= README_MAX_LINES


def test_the_line_count_check_refuses_one_line_past_the_limit() -> None:
    # The limit's two sides, on the counting the test above uses.
    at_limit = "line\n" * README_MAX_LINES
    assert len(at_limit.splitlines()) <= README_MAX_LINES
    assert not len((at_limit + "line\n").splitlines()) <= README_MAX_LINES


def test_the_link_finder_sees_links_and_skips_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("See [a](a.md) and [b](../b.md#part), [web](https://x.org).\n"
                    "`[not](inline.md)`\n```sh\n[not](block.md)\n```\n# A `Title`, here\n")
    assert links(page) == ["a.md", "../b.md#part", "https://x.org"]
    assert [t for t in links(page) if relative(t)] == ["a.md", "../b.md#part"]
    assert heading_anchors(page) == {"a-title-here"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_relative_link_reaches_an_existing_file(document: Path) -> None:
    broken = []
    for target in filter(relative, links(document)):
        path, _, anchor = target.partition("#")
        reached = (document.parent / path).resolve() if path else document
        if not reached.exists():
            broken.append(f"{target}: no such file")
        elif anchor and reached.suffix == ".md" and anchor not in heading_anchors(reached):
            broken.append(f"{target}: no heading #{anchor} in {reached.relative_to(ROOT)}")
    assert not broken, f"{document.relative_to(ROOT)}: {broken}"


def test_every_document_in_docs_is_linked_from_the_readme_or_another_document() -> None:
    linked = {(document.parent / target.partition("#")[0]).resolve()
              for document in DOCUMENTS for target in filter(relative, links(document))
              if target.partition("#")[0]}
    orphans = [str(d.relative_to(ROOT)) for d in DOCUMENTS[1:]
               if d.resolve() not in linked and d.parent.name != "bench"]
    assert not orphans


def test_the_api_overview_names_every_method_of_every_service() -> None:
    from google.protobuf import descriptor_pool

    from paygrid.channel.v1 import payment_channel_pb2  # noqa: F401  (registers the services)
    from paygrid.v1 import batch_service_pb2, payment_service_pb2  # noqa: F401

    table = (ROOT / "docs" / "api" / "README.md").read_text()
    rows = {row.split("|")[2].strip(" `").split("`")[0]: row for row in table.splitlines()
            if row.startswith("| `paygrid")}
    pool = descriptor_pool.Default()
    for service in ("paygrid.v1.PaymentService", "paygrid.v1.BatchService",
                    "paygrid.channel.v1.PaymentChannel"):
        descriptor = pool.FindServiceByName(service)
        row = rows[descriptor.name]
        missing = [m.name for m in descriptor.methods if f"`{m.name}`" not in row]
        assert not missing, f"{service}: {missing} not in docs/api/README.md"


def enum_members(class_name: str) -> set[str]:
    """The members of an enum class of the server, found wherever its
    module lives (the code moves; the diagrams must follow its states)."""
    for source in (ROOT / "server" / "paygrid_server").rglob("*.py"):
        if f"class {class_name}(" not in source.read_text():
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ClassDef) and node.name == class_name:
                return {target.id for statement in node.body
                        if isinstance(statement, ast.Assign)
                        for target in statement.targets if isinstance(target, ast.Name)}
    raise AssertionError(f"no enum {class_name} in server/paygrid_server")


@pytest.mark.parametrize("enum_name", ["PaymentStatus", "LegStatus", "BatchStatus",
                                       "BatchItemStatus", "BreakerState"])
def test_the_state_diagram_names_every_state_of_its_enum(enum_name: str) -> None:
    text = (ROOT / "docs" / "architecture" / "state-machines.md").read_text()
    section = re.search(rf"^## [^\n]*`{enum_name}`.*?(?=^## |\Z)", text, re.M | re.S)
    assert section, f"no section for {enum_name}"
    [diagram] = re.findall(r"^```mermaid\n(.*?)^```", section.group(0), re.M | re.S)
    assert diagram.startswith("stateDiagram-v2")
    transitions = re.findall(r"^\s*(\[\*\]|\w+)\s*-->\s*(\[\*\]|\w+)\s*(?::.*)?$",
                             diagram, re.M)
    assert len(transitions) == len(diagram.strip().splitlines()) - 1, "a line is no transition"
    drawn = {state for pair in transitions for state in pair} - {"[*]"}
    members = enum_members(enum_name)
    assert members, enum_name
    assert members <= drawn, f"{enum_name}: {sorted(members - drawn)} not drawn"
    assert drawn <= members, f"{enum_name}: {sorted(drawn - members)} are not its states"
