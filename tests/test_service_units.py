"""systemd units: `systemd-analyze verify` is clean and the hardening exposure stays <= 2.0.

`systemd-analyze verify` fails when ExecStart's binary is missing, and /usr/local/bin/anprd is
only there after `make install`. So each test copies the unit into tmp_path and points
ExecStart at this interpreter (a real executable); everything else is checked as shipped.
verify reports unknown keys and bad values as warnings with exit status 0, hence the checks
for empty stderr. Both need systemd's tools installed, not a running systemd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anprd.config.service import NotifyConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
UNIT_DIR = REPO_ROOT / "systemd"
UNITS = ("anprd.service", "anprd@.service")
INSTALLED_BINARY = "/usr/local/bin/anprd"
MAX_EXPOSURE = 2.0
# Directives allowed to differ between the single unit and the per-camera template.
PER_INSTANCE_KEYS = {"Description", "ExecStart", "SyslogIdentifier", "StateDirectory", "AssertPathExists"}


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: install systemd (apt-get install systemd) to check the units")
    return path


def analyzable_copy(unit: str, directory: Path, name: str | None = None) -> Path:
    """The unit with ExecStart's binary replaced by this Python, written under ``directory``."""
    text = (UNIT_DIR / unit).read_text()
    assert f"ExecStart={INSTALLED_BINARY} " in text, f"{unit}: ExecStart no longer runs {INSTALLED_BINARY}"
    target = directory / (name or unit)
    target.write_text(text.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={sys.executable} "))
    return target


def run_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([systemd_analyze(), *args], capture_output=True, text=True, timeout=60, check=False)


def directives(unit: str) -> dict[str, list[str]]:
    """``[Section] Key=value`` lines as {"Section.Key": [values...]} (keys may repeat)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in (UNIT_DIR / unit).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key}", []).append(value)
    return found


@pytest.mark.parametrize(
    ("unit", "name"), [(u, None) for u in UNITS] + [("anprd@.service", "anprd@gate1.service")]
)
def test_verify_is_clean(unit: str, name: str | None, tmp_path: Path) -> None:
    copy = analyzable_copy(unit, tmp_path, name)
    result = run_analyze("verify", str(copy))
    assert result.returncode == 0 and result.stderr == "", (
        f"systemd-analyze verify {copy.name}:\n{result.stderr}"
    )


def test_verify_does_report_mistakes(tmp_path: Path) -> None:
    # Guards the empty-stderr check above: verify must actually flag a bad key on this systemd.
    copy = analyzable_copy("anprd.service", tmp_path)
    copy.write_text(copy.read_text().replace("[Service]\n", "[Service]\nWatchdogSecs=30s\n", 1))
    result = run_analyze("verify", str(copy))
    assert "WatchdogSecs" in result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure(unit: str, tmp_path: Path) -> None:
    copy = analyzable_copy(unit, tmp_path)
    # --threshold is on a 0-100 scale (exposure x 10); above it the exit status is non-zero.
    result = run_analyze("security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}", str(copy))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, f"no exposure in systemd-analyze output:\n{result.stdout}\n{result.stderr}"
    exposure = float(match.group(1))
    exposed = "\n".join(line for line in result.stdout.splitlines() if line.startswith("✗"))
    assert exposure <= MAX_EXPOSURE, f"{unit}: exposure {exposure} > {MAX_EXPOSURE}:\n{exposed}"
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_service_contract(unit: str) -> None:
    found = directives(unit)
    service = {
        key.split(".", 1)[1]: values[-1] for key, values in found.items() if key.startswith("Service.")
    }
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["DynamicUser"] == "yes"
    assert service["StateDirectory"].startswith("anprd")
    assert service["ProtectSystem"] == "strict"
    # The daemon drains for up to drain_timeout_s after STOPPING=1; systemd must wait longer.
    assert _seconds(service["TimeoutStopSec"]) > NotifyConfig().drain_timeout_s
    # Pings come from the main loop every WatchdogSec/2; a short watchdog would kill a slow but
    # healthy pipeline whose loop is briefly held up by seconds-long inference on a busy CPU.
    assert _seconds(service["WatchdogSec"]) >= 20
    assert found["Install.WantedBy"] == ["multi-user.target"]


def test_template_reads_instance_config() -> None:
    service = directives("anprd@.service")
    assert service["Service.ExecStart"] == [f"{INSTALLED_BINARY} run --config /etc/anprd/%i.yaml"]
    assert service["Service.StateDirectory"] == ["anprd/%i"]
    assert directives("anprd.service")["Service.ExecStart"] == [
        f"{INSTALLED_BINARY} run --config /etc/anprd/config.yaml"
    ]


def test_units_share_hardening() -> None:
    single, template = directives("anprd.service"), directives("anprd@.service")

    def shared(found: dict[str, list[str]]) -> dict[str, list[str]]:
        return {key: values for key, values in found.items() if key.split(".", 1)[1] not in PER_INSTANCE_KEYS}

    assert shared(single) == shared(template)


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min)?", value)
    assert match, f"unsupported time span {value!r}"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_install_script_usage_and_checks(tmp_path: Path) -> None:
    # Only the argument checks: a real install builds the package (see the README, "Run as a service").
    script = REPO_ROOT / "scripts" / "install.sh"
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, check=False)
    assert shown.returncode == 0 and "PREFIX" in shown.stdout and "DESTDIR" in shown.stdout

    bad = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "unknown option: --bogus" in bad.stderr

    env = {"PATH": "/usr/bin:/bin", "PREFIX": "relative/path", "DESTDIR": str(tmp_path)}
    relative = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=False)
    assert relative.returncode != 0 and "PREFIX must be an absolute path" in relative.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written before the checks pass
