"""The README's Python API snippet runs as written (on a golden checkpoint instead of a download),
and the names it documents exist."""
import pathlib
import re


from deeplab_load import zoo

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def section(title):
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def test_python_api_snippet_runs(make_golden_checkpoint):
    code = re.search(r"```python\n(.*?)```", section("Python API"), re.S).group(1)
    checkpoint = make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json")
    assert '"checkpoints/mobilenetv2_coco_voc_trainaug"' in code
    code = code.replace('"checkpoints/mobilenetv2_coco_voc_trainaug"', repr(checkpoint))
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["report"].loaded > 0
    assert tuple(namespace["raw_logits"].shape) == (1, 19, 25, 21)
    assert namespace["labels"].shape == (1, 300, 400)
    assert namespace["labels_no_padding"].shape == (1, 300, 400)
    assert len(namespace["same_architecture"].weights) == len(namespace["model"].weights)


def test_zoo_table_names_exist():
    names = re.findall(r"`([a-z0-9_]+)`", section("Model zoo"))
    listed = [n for n in names if "_" in n and not n.startswith(("tools", "logits"))]
    assert listed and set(listed) <= set(zoo.ZOO), sorted(set(listed) - set(zoo.ZOO))


def test_readme_starts_with_the_two_newcomer_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
    assert first_block[0].startswith("pip install -e . && python -m deeplab_load.train")
    assert first_block[1].startswith('pip install -e ".[test]" && python -m pytest tests')
    ci = (pathlib.Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[test]"' in ci and "python -m pytest tests" in ci
