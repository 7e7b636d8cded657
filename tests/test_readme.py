"""The README's Python API snippet runs as written (on a golden checkpoint instead of a download),
and the names it documents exist."""
import pathlib
import re


from deeplab_load.checkpoints import zoo
from deeplab_load.training.segmentor import Segmentor, check_segmentor

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
    install, test_command = first_block[1].split("#")[0].strip().split(" && ")
    assert install == 'pip install -e ".[test]"' and test_command.startswith("python -m pytest")
    ci = (pathlib.Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[test]"' in ci and f"\n{test_command}\n" in ci


def test_training_api_snippet_builds_the_commands_config():
    """The Commands section's Python snippet makes the config the train command would (the run
    itself is the e2e tests' job: run_training is replaced by a recorder here)."""
    code = re.search(r"```python\n(.*?)```", section("Commands"), re.S).group(1)
    import_line = "from deeplab_load.training.run import run_training\n"
    assert import_line in code
    seen = []

    def run_training(config):
        seen.append(config)
        return {"baseline_miou": 0.5, "final_miou": 0.6}

    exec(compile(code.replace(import_line, ""), "README.md", "exec"),
         {"run_training": run_training})
    from deeplab_load.training.config import DEMO_PROFILE
    (config,) = seen
    assert config.run.run_dir == "runs/demo_api" and config.run.seed == 1
    assert all(config.flag_values()[name] == value for name, value in DEMO_PROFILE.items())


def readme_dataset_dir_commands():
    """(dataset, --dataset_dir value) of every README command line that gives --dataset_dir."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            directory = re.search(r"--dataset_dir=(\S+)", line)
            if not directory:
                continue
            name = re.search(r"--dataset=(\w+)", line)
            if name is None:
                flagfile = re.search(r"--flagfile=(\S+)", line).group(1)
                text = (pathlib.Path(__file__).resolve().parents[1] / flagfile).read_text()
                name = re.search(r"--dataset=(\w+)", text)
            commands.append((name.group(1), directory.group(1)))
    return commands


def test_every_readme_dataset_dir_form_opens_a_tree_in_that_layout(tmp_path):
    """Each README command's --dataset_dir (with /data/ moved under tmp) opens a fake tree
    laid out as the README's data-set table says."""
    from fake_datasets import make_fake_cityscapes, make_fake_stanford, make_fake_voc
    from deeplab_load.data import get_dataset
    commands = readme_dataset_dir_commands()
    assert {name for name, _ in commands} >= {"voc", "cityscapes", "stanford"}
    makers = {"voc": make_fake_voc, "cityscapes": make_fake_cityscapes,
              "stanford": make_fake_stanford}
    made = set()
    for name, directory in commands:
        assert directory.startswith("/data/"), directory
        root = tmp_path / directory[len("/data/"):]
        if root not in made:
            made.add(root)
            makers[name](root)
        dataset = get_dataset(name, root)
        assert dataset.examples("val"), (name, directory)


def test_own_segmentor_snippet_meets_the_contract():
    """The segmentor of "LoAd on your own segmentor" passes `check_segmentor` at the demo's
    sizes and reaches run_training with the config (the run itself: tests/test_segmentor.py)."""
    code = re.search(r"```python\n(.*?)```", section("LoAd on your own segmentor"), re.S).group(1)
    import_line = "from deeplab_load.training.run import run_training\n"
    assert import_line in code
    seen = []

    def run_training(config, segmentor=None):
        model = segmentor.build(6)
        seen.append((config, check_segmentor(segmentor, model, 6, [(97, 97), (97, 129)])))
        return {}

    namespace = {"run_training": run_training}
    exec(compile(code.replace(import_line, ""), "README.md", "exec"), namespace)
    (config, model), = seen
    assert isinstance(namespace["segmentor"], Segmentor)
    assert config.data.dataset == "demo" and config.model.weight_decay == 0.0
    assert model.output_shape[-1] == 6


def test_newcomer_sections_come_first_and_reference_pages_are_linked():
    """What it is, the demo, the evidence and the paper's commands open the README; the
    reference sections live in docs/ and every README link to docs/ resolves."""
    titles = re.findall(r"^## (.+)$", README, re.M)
    assert titles[0] == "What you get" and titles[1].startswith("Does LoAd work?"), titles
    assert titles[2] == "The paper's experiments", titles
    root = pathlib.Path(__file__).resolve().parents[1]
    links = set(re.findall(r"\]\((docs/[^)]+)\)", README))
    assert {"docs/DATASETS.md", "docs/TRAINING.md", "docs/SPEED.md", "docs/REPRODUCIBILITY.md",
            "docs/ABLATION.md"} <= links
    assert all((root / link).is_file() for link in links), sorted(links)
    # Moved measurements keep the commit they were measured on.
    assert "commit 9ac604d" in (root / "docs" / "SPEED.md").read_text()
    assert "e59b3f0" in (root / "docs" / "SPEED.md").read_text()
    assert "930c12d" in (root / "docs" / "REPRODUCIBILITY.md").read_text()
    for title in ("Data sets", "Speed and memory", "Reproducibility"):
        assert title not in titles
