"""A wheel install (pip install git+... of this repository, outside a checkout) carries the profiles, the executor
settings and the GSM8K data, and writes
results to the working folder instead of site-packages."""

import subprocess
import sys

from rlcp_utils.core.config import REPO_ROOT


def test_wheel_ships_profiles_and_gsm8k_and_works_outside_the_checkout(tmp_path):
    wheel_dir, target, work = tmp_path / "wheel", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO_ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(wheel_dir.glob("rlcp-*.whl"))
    subprocess.run(pip + ["install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    code = ("import rlcp_utils.core.config as c, rlcp_utils.measures.gsm8k as g; p = c.load_profile('default'); "
            "import rlcp_utils.core.executor as e; "
            "print(c.IN_CHECKOUT, p.output_dir, p['model'], len(g.load_problems()), sorted(x.stem for x in c.PARAMS_DIR.glob('*.yaml')), "
            "e.executor_settings('slurm').kind)")
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env={"PYTHONPATH": str(target), "PATH": ""},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:2] == ["False", str(work / "outputs" / "default")]
    assert "1319" in out.stdout and "['default', 'fp32-check', 'paper', 'smoke']" in out.stdout
    assert out.stdout.split()[-1] == "slurm"  # params/executors/ ships too
