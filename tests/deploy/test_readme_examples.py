"""The README's grpcurl commands against the protos (grpcurl itself is not
needed): every body parses as its method's request message, and the API key
is sent to every paygrid.v1 method and only there."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2  # noqa: F401  (registers grpc.health.v1)

from paygrid.v1 import batch_service_pb2, payment_service_pb2  # noqa: F401  (register paygrid.v1)
from paygrid_server.transport.api_key_authentication import PROTECTED_METHOD_PREFIXES

# The repository root, wherever in tests/ this file lives.
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
# The README shows a taste; docs/ holds the rest (docs/clients/grpcurl.md...).
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# The dev key in the quick start; a real key (or a variable) after it.
API_KEY_HEADER = re.compile(r"authorization: Bearer (paygrid-dev-key|\$\w+|pgk_\S+)")
FLAGS = {"-plaintext", "-insecure", "-v"}
OPTIONS = {"-H", "-d", "-cacert", "-cert", "-key", "-authority", "-servername",
           "-max-time", "-connect-timeout"}


@dataclass
class Grpcurl:
    document: str
    line: int
    argv: list[str]
    stdin: str = ""
    options: dict[str, list[str]] = field(default_factory=dict)
    positional: list[str] = field(default_factory=list)


def shell_commands(block: str, first_line: int) -> list[tuple[int, str, str]]:
    """(line, command, here-document) for each command of a shell block,
    joining lines continued by a backslash or an open quote."""
    lines = block.split("\n")
    commands = []
    i = 0
    while i < len(lines):
        start, text = i, lines[i]
        comment = text.lstrip().startswith("#")  # may hold an apostrophe
        while not comment and (text.endswith("\\") or text.count("'") % 2) \
                and i + 1 < len(lines):
            i += 1
            text = text.removesuffix("\\") + "\n" + lines[i]
        i += 1
        heredoc = ""
        if match := re.search(r"<<'(\w+)'\s*$", text):
            end = lines.index(match.group(1), i)
            heredoc, i = "\n".join(lines[i:end]), end + 1
            text = text[:match.start()]
        if text.strip() and not text.lstrip().startswith("#"):
            commands.append((first_line + start, text, heredoc))
    return commands


def grpcurl_commands(document: Path) -> list[Grpcurl]:
    text = document.read_text()
    name = str(document.relative_to(ROOT))
    found = []
    for match in re.finditer(r"^```(?:sh|bash|console)\n(.*?)^```", text, re.M | re.S):
        first_line = text.count("\n", 0, match.start(1)) + 1
        for line, command, heredoc in shell_commands(match.group(1).rstrip("\n"), first_line):
            argv = shlex.split(command, comments=True)
            if argv and argv[0] == "grpcurl":
                found.append(parse(Grpcurl(name, line, argv, heredoc)))
    return found


def parse(command: Grpcurl) -> Grpcurl:
    words = iter(command.argv[1:])
    for word in words:
        if word in FLAGS:
            command.options.setdefault(word, [])
        elif word in OPTIONS:
            command.options.setdefault(word, []).append(next(words))
        elif word.startswith("-"):
            raise AssertionError(f"{command.document} line {command.line}: grpcurl option {word} "
                                 "is not one this test knows")
        else:
            command.positional.append(word)
    return command


COMMANDS = [command for document in DOCUMENTS for command in grpcurl_commands(document)]


def methods(commands: list[Grpcurl]) -> set[str]:
    return {c.positional[1] for c in commands if len(c.positional) == 2}


def test_the_docs_have_grpcurl_examples_for_every_paygrid_method() -> None:
    services = ("paygrid.v1.PaymentService", "paygrid.v1.BatchService")
    every_method = {f"{name}/{method.name}" for name in services
                    for method in descriptor_pool.Default().FindServiceByName(name).methods}
    assert every_method | {"grpc.health.v1.Health/Check"} <= methods(COMMANDS)
    assert any(c.positional[1:2] == ["list"] for c in COMMANDS)


def test_the_readme_gives_a_taste_of_pay_and_submit_batch() -> None:
    readme = grpcurl_commands(ROOT / "README.md")
    assert {"paygrid.v1.PaymentService/Pay", "paygrid.v1.BatchService/SubmitBatch",
            "grpc.health.v1.Health/Check"} <= methods(readme)
    assert any(c.positional[1:2] == ["list"] for c in readme)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.document}:{c.line}")
def test_grpcurl_example_is_valid_for_the_protos(command: Grpcurl) -> None:
    where = f"{command.document} line {command.line}"
    target, *call = command.positional
    assert re.fullmatch(r"[\w.-]+:\d+", target), f"{where}: address first, got {target!r}"
    headers = command.options.get("-H", [])
    if call[:1] in (["list"], ["describe"]) or not call:
        assert not headers, f"{where}: reflection needs no key; show it without one"
        return
    [method] = call
    service_name, _, method_name = method.partition("/")
    service = descriptor_pool.Default().FindServiceByName(service_name)
    request_type = message_factory.GetMessageClass(
        service.FindMethodByName(method_name).input_type)
    if f"/{method}".startswith(PROTECTED_METHOD_PREFIXES):
        assert len(headers) == 1 and API_KEY_HEADER.fullmatch(headers[0]), (
            f"{where}: {method} needs the API key")
    else:
        assert not headers, f"{where}: {method} needs no key; show it without one"

    [body] = command.options.get("-d", ["{}"])
    if body == "@":
        body = command.stdin
        assert body, f"{where}: -d @ reads the request messages from standard input"
    decoder = json.JSONDecoder()
    position, messages = 0, 0
    while body[position:].strip():
        position += len(body[position:]) - len(body[position:].lstrip())
        value, position = decoder.raw_decode(body, position)
        json_format.Parse(json.dumps(value), request_type())
        messages += 1
    assert messages, f"{where}: no request message"
