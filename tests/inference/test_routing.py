"""The routes file: the shipped one loads, a bad one fails start-up with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.errors import RoutesFileError
from inference.routing import load_routes
from inference.settings import InferenceSettings

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_routes_file_routes_answerer_to_the_triton_answerer() -> None:
    path = InferenceSettings.model_fields["routes_file"].default
    routes = load_routes(ROOT / path)
    assert routes.default == "answerer"
    targets = routes.targets("")
    assert targets is not None
    assert [t.name for t in targets] == ["triton/extractive_answerer"]
    assert routes.targets("answerer") == targets
    assert routes.targets("gpt-9") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default: [unclosed", "not valid YAML"),
        ("default: a\naliases: {b: [{provider: triton, model: m}]}", "default alias 'a'"),
        ("default: a\naliases: {a: []}", "aliases without targets: a"),
        ("default: a\naliases: {a: [{provider: bedrock, model: m}]}", "provider"),
        ("default: a\naliases: {a: [{provider: openai, model: m}]}", "needs base_url"),
        ("default: a\naliases: {a: [{provider: triton, model: m, timeout_s: 0}]}", "timeout_s"),
        ("default: a\naliases: {a: [{provider: triton, model: m, retries: 3}]}", "retries"),
    ],
)
def test_a_bad_routes_file_names_the_file_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(RoutesFileError, match=message) as raised:
        load_routes(path)
    assert str(path) in str(raised.value)


def test_a_missing_routes_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RoutesFileError, match="cannot read the routes file"):
        load_routes(tmp_path / "nope.yaml")
