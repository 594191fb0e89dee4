"""The environment files agree with each other."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[name.lower()] = version
    return out


def test_environment_yml_has_exactly_the_pip_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = dict(item.lower().split("==") for item in pip_section)
    assert conda_pins == {**pins(ROOT / "requirements-torch.txt"), **pins(ROOT / "requirements.txt")}
    assert "python=3.11" in env["dependencies"]


def test_every_requirement_is_pinned_exactly_and_agrees_with_constraints():
    constraints = pins(ROOT / "constraints.txt")
    for name, version in pins(ROOT / "requirements.txt").items():
        assert version and constraints.get(name) == version, name


def test_torch_is_not_in_the_main_requirements():
    # torch must be installed first and alone (requirements-torch.txt) so nothing pulls a CUDA build
    assert "torch" not in pins(ROOT / "requirements.txt")
    assert "torch" not in pins(ROOT / "constraints.txt")


def test_repro_kernel_runs_this_environment():
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("repro")
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()


def test_jupyterlab_opens_myst_chapters_as_notebooks():
    import json
    import sys

    overrides = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    viewers = json.loads(overrides.read_text())["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["markdown"] == viewers["myst"] == "Jupytext Notebook"
    assert (Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "jupyterlab-jupytext").is_dir()


def test_library_tests_and_benchmarks_pass_ruff():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "lib", "tests", "bench"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
