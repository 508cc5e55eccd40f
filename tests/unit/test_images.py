"""Static checks of the container images in images/ (Docker cannot run here, so they are read, not built): pinned
base images, a non-root final user, pinned Python packages that agree with constraints.txt, and a README each."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
NAMES = sorted(p.parent.name for p in IMAGES.glob("*/Dockerfile"))
CONSTRAINTS = {
    name.lower().replace("_", "-"): version
    for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "constraints.txt").read_text(), re.M)
}
# options of `pip install` / `pip wheel` that take a value (the value is not a requirement)
PIP_VALUE_OPTIONS = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "--extra-index-url"}
PIP_VALUE_OPTIONS |= {"-f", "--find-links", "-w", "--wheel-dir", "-t", "--target", "--prefix", "--root"}


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def stages(dockerfile: Path) -> list[Stage]:
    """The build stages, each with its instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    found: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--platform")]
            found.append(Stage(words[0], words[2] if len(words) == 3 and words[1].lower() == "as" else None))
        else:
            assert found, f"{dockerfile}: {keyword} before FROM"
            found[-1].instructions.append((keyword, rest.strip()))
    return found


def pip_commands(stage: Stage) -> list[list[str]]:
    """Every `pip install` / `pip wheel` in a stage's RUN instructions, as words after the subcommand."""
    out = []
    for keyword, rest in stage.instructions:
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", rest):
            words = shlex.split(command)
            for i, word in enumerate(words):
                if (word == "pip" or word.endswith("/pip")) and words[i + 1 : i + 2] in (["install"], ["wheel"]):
                    out.append(words[i + 2 :])
    return out


def requirements(args: list[str]) -> tuple[list[str], bool]:
    """The requirements named on a pip command line, and whether it is constrained by constraints.txt."""
    named, constrained, skip = [], False, False
    for i, word in enumerate(args):
        if skip:
            skip = False
            continue
        if word in {"-c", "--constraint"}:
            constrained = constrained or args[i + 1].endswith("constraints.txt")
        if word in PIP_VALUE_OPTIONS:
            skip = True
        elif not word.startswith("-"):
            named.append(word)
    return named, constrained


@pytest.mark.parametrize("name", NAMES)
def test_every_base_image_is_pinned(name: str) -> None:
    built = stages(IMAGES / name / "Dockerfile")
    earlier = set()
    for stage in built:
        if stage.image not in earlier:
            repository, _, tag = stage.image.partition("@")[0].rpartition(":")
            assert repository, f"{name}: FROM {stage.image} has no tag"
            assert "/" not in tag, f"{name}: FROM {stage.image} has no tag"
            assert tag.lower() != "latest", f"{name}: FROM {stage.image}"
            assert re.search(r"\d", tag), f"{name}: FROM {stage.image}: the tag names no version"
        if stage.name:
            earlier.add(stage.name)
        for keyword, rest in stage.instructions:
            source = re.search(r"--from=(\S+)", rest) if keyword in {"COPY", "RUN"} else None
            assert source is None or source.group(1) in earlier, f"{name}: {keyword} {rest}: no such stage"


@pytest.mark.parametrize("name", NAMES)
def test_the_final_stage_runs_as_a_numeric_non_root_user(name: str) -> None:
    final = stages(IMAGES / name / "Dockerfile")[-1]
    users = [rest for keyword, rest in final.instructions if keyword == "USER"]
    assert users, f"{name}: the final stage sets no USER (it would run as root)"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), f"{name}: USER {users[-1]}: numeric, so that runAsNonRoot can be verified"
    assert int(user) != 0, f"{name}: USER {users[-1]} is root"
    assert not group or int(group) != 0, f"{name}: USER {users[-1]}: group root"


@pytest.mark.parametrize("name", NAMES)
def test_python_packages_are_pinned_to_the_lock(name: str) -> None:
    commands = [args for stage in stages(IMAGES / name / "Dockerfile") for args in pip_commands(stage)]
    assert commands, f"{name}: installs no Python packages?"
    for args in commands:
        named, constrained = requirements(args)
        for requirement in named:
            if requirement == "." or requirement.endswith(".whl"):  # this repository, or a wheel built from it
                assert constrained or "--no-deps" in args, f"{name}: pip {' '.join(args)}: dependencies unpinned"
                continue
            package, pinned, version = requirement.partition("==")
            assert pinned, f"{name}: {requirement} is not pinned (package==version)"
            locked = CONSTRAINTS.get(package.lower().replace("_", "-"))
            assert locked in {None, version.split("+")[0]}, f"{name}: {requirement}, but constraints.txt has {locked}"


@pytest.mark.parametrize("name", NAMES)
def test_each_image_has_a_readme(name: str) -> None:
    readme = IMAGES / name / "README.md"
    assert readme.is_file(), f"images/{name} has no README.md"
    text = readme.read_text()
    for heading in ("## Build", "## What runs as whom", "## Pins"):
        assert heading in text, f"images/{name}/README.md has no {heading!r} section"
    assert f"-f images/{name}/Dockerfile" in text, "the README shows how to build it"
    assert "Tested by:" in text


def test_cove_image_is_multi_stage_and_runs_every_process() -> None:
    built = stages(IMAGES / "cove" / "Dockerfile")
    assert len(built) >= 2, "a builder stage keeps compilers and caches out of the image"
    final = dict(built[-1].instructions)
    assert final["ENTRYPOINT"] == '["cove"]'
    assert set(final["EXPOSE"].split()) >= {"8080", "8501", "7860", "8000", "8081"}  # the chart's ports
    assert built[0].image == built[-1].image, "wheels built on the Python they run on"


def test_notebook_image_user_is_the_one_the_hub_expects() -> None:
    final = dict(stages(IMAGES / "notebook" / "Dockerfile")[-1].instructions)
    assert final["USER"] == "1000:100"  # hub/jupyterhub_config.py: KubeSpawner uid 1000, gid 100 (jovyan, users)
    assert final["WORKDIR"] == "/home/jovyan"  # where KubeSpawner mounts the home volume


@pytest.mark.parametrize("image", ["notebook", "cove"])
def test_images_carry_every_package_cove_ships(image: str) -> None:
    """The wheel is built from the sources copied in: a package left out is missing from the image (``import
    cove`` — the client every notebook and the CLI use — would fail there)."""
    import tomllib

    packed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    built = stages(IMAGES / image / "Dockerfile")
    sources = [rest for stage in built for kw, rest in stage.instructions if kw == "COPY" and "--" not in rest]
    copied = {rest.split()[0].rstrip("/") for rest in sources}
    assert {p.rstrip("*") for p in packed} <= copied


def test_the_notebook_image_checks_the_client_imports() -> None:
    built = stages(IMAGES / "notebook" / "Dockerfile")
    checks = [rest for kw, rest in built[-1].instructions if kw == "RUN" and "python -c" in rest]
    assert any("import cove" in c for c in checks), "the image checks the client imports"
