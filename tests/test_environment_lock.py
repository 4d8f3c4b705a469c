"""The stack CI tests is the stack a user installs: envs/requirements.lock pins every package
exactly, within the ranges of envs/requirements.txt, and it is what this environment holds
(the README's test command runs envs/setup.sh first, so on a fresh machine this checks that
set-up installs the lock)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ENVS = Path(__file__).resolve().parents[1] / "envs"


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def locked() -> dict[str, str]:
    pins = {}
    for line in requirement_lines(ENVS / "requirements.lock"):
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{line}: the lock pins exact versions only"
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_every_direct_dependency_is_locked_within_its_range() -> None:
    pins = locked()
    for line in requirement_lines(ENVS / "requirements.txt"):
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in requirements.txt but not in the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock's {requirement.name}=={pins[name]} is outside {requirement.specifier}: "
            "run `bash envs/lock.sh`"
        )


def test_this_environment_holds_exactly_the_locked_versions() -> None:
    wrong = []
    for name, pinned in locked().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            wrong.append(f"{name}: not installed (lock {pinned})")
            continue
        # A local build tag (torch 2.13.0+cpu) is the same release as the lock's 2.13.0.
        if Version(installed).public != Version(pinned).public:
            wrong.append(f"{name}: {installed} installed, lock {pinned}")
    assert not wrong, "run `bash envs/setup.sh`: " + "; ".join(wrong)
