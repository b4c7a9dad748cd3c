"""Pod templates: the built-in default, files, named templates and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.launcher.template import DEFAULT_TEMPLATE, TemplateError, TemplateLibrary

GPU = """
apiVersion: v1
kind: Pod
metadata:
  labels: {pool: gpu}
spec:
  nodeSelector: {gpu: "true"}
  containers:
    - name: base
      resources: {limits: {nvidia.com/gpu: 1}}
"""


def test_default_is_built_in_and_handed_out_as_copies() -> None:
    library = TemplateLibrary()
    first = library.get()
    assert first == DEFAULT_TEMPLATE
    first["spec"]["containers"].clear()
    assert library.get() == DEFAULT_TEMPLATE


def test_default_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(GPU)
    assert TemplateLibrary(path).get()["spec"]["nodeSelector"] == {"gpu": "true"}


def test_named_templates_come_from_the_directory(tmp_path: Path) -> None:
    (tmp_path / "gpu.yaml").write_text(GPU)
    library = TemplateLibrary(directory=tmp_path)
    assert library.get("gpu")["metadata"]["labels"] == {"pool": "gpu"}
    assert library.get() == DEFAULT_TEMPLATE
    with pytest.raises(TemplateError, match="unknown pod template 'cpu'"):
        library.get("cpu")


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs", "a/b", "..", ""])
def test_template_names_cannot_escape_the_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(TemplateError, match="unknown pod template"):
        TemplateLibrary(directory=tmp_path).get(name)


def test_named_templates_need_a_directory() -> None:
    with pytest.raises(TemplateError):
        TemplateLibrary().get("gpu")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spec: [", "not valid YAML"),
        ("- a\n- b", "must be a mapping"),
        ("kind: Deployment", "expected Pod"),
        ("spec: {containers: [1]}", "list of mappings"),
        ("metadata: [1]", "metadata must be a mapping"),
        ("metadata: {labels: {1: x}}", "not plain JSON data"),
    ],
)
def test_bad_templates_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TemplateError, match=message):
        TemplateLibrary(path)


def test_missing_file_or_directory(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="cannot read"):
        TemplateLibrary(tmp_path / "nope.yaml")
    with pytest.raises(TemplateError, match="does not exist"):
        TemplateLibrary(directory=tmp_path / "nope")
