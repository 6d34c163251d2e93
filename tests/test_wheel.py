"""The installed product: the wheel built from this checkout, installed non-editable in a fresh venv, trains,
evaluates (with the HTML report) and runs the smoke demo from a folder outside the checkout.

The fresh venv takes its dependencies (torch, transformers, ...) from this venv's site-packages through a one-line
``.pth`` (a plain path: the ``.pth`` files *inside* that folder, among them the editable install's, are not
processed), so nothing is downloaded and the checkout itself is never importable there.
"""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# what a build of the checkout must not see: local environments, caches and earlier build output (a stale
# build/lib would put modules that no longer exist into the wheel)
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "results"
)


def _run(cmd: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"{cmd}: exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_trains_evaluates_and_runs_the_demo(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=NOT_SOURCES, symlinks=True)
    dist = tmp_path / "dist"
    # the build backend (setuptools) is taken from this venv: no download
    _run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(dist), "-q"],
        cwd=tmp_path,
        timeout=600,
    )
    (wheel,) = dist.glob("audiopalm-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, timeout=120)
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, 60)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "deps_from_dev_venv.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    # pip runs from the dev venv's site-packages but installs into the fresh venv; --ignore-installed: never
    # uninstall the editable audiopalm that pip sees on that path
    _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        cwd=tmp_path,
        timeout=600,
    )

    work = tmp_path / "work"  # the cwd of every command: not the checkout
    work.mkdir()
    where = _run(
        [
            str(python),
            "-c",
            "import audiopalm, data_prep, audiopalm.recipes as r; print(audiopalm.__file__); "
            "print(data_prep.__file__); print(r.CONFIG_DIR)",
        ],
        work,
        60,
    ).stdout.split()
    for path in where:  # the package, the corpus synthesis the demo runs, and the shipped configs
        assert Path(path).is_relative_to(venv), (path, venv)
        assert not Path(path).is_relative_to(REPO), (path, REPO)

    audiopalm = str(venv / "bin" / "audiopalm")
    demo = work / "demo"
    run = _run([audiopalm, "demo", "--profile", "smoke", "--out", str(demo)], work, 3600)
    assert (demo / "audiopalm/final/model.safetensors").is_file(), run.stdout[-3000:]
    html = (demo / "eval/report.html").read_text()
    assert "<audio" in html and "data:image/png;base64" in html  # the report's audio players and loss plot

    # a recipe by its shipped config name, on the demo's corpus
    out = work / "tiny_lm"
    _run(
        [
            audiopalm,
            "train",
            "pretrain_text",
            "--config",
            "pretrain_text_tiny",
            f"data.manifests=[{demo / 'corpus/train.jsonl'}]",
            f"train.output_dir={out}",
            "train.max_steps=2",
        ],
        work,
        600,
    )
    assert (out / "final" / "model.safetensors").is_file(), sorted(p.name for p in out.rglob("*"))
